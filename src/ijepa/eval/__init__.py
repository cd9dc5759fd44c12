"""Evaluation of frozen encoders: feature extraction, kNN, linear, low-shot and attentive probes.

Everything here takes an encoder module (``(B, C, H, W) -> (B, N, D)`` patch tokens) or feature
tensors and returns plain JSON-serialisable dicts; nothing reads configs, files (except the
explicit feature cache) or the environment.
"""

from ijepa.eval.attentive import AttentivePooler, attentive_probe
from ijepa.eval.cache import (
    FeatureSet,
    StaleFeatureCacheError,
    checkpoint_fingerprint,
    load_features,
    save_features,
)
from ijepa.eval.features import POOLINGS, extract_features
from ijepa.eval.knn import knn_classify, knn_scores
from ijepa.eval.linear import linear_probe
from ijepa.eval.lowshot import draw_lowshot_indices, lowshot_eval

__all__ = [
    "POOLINGS",
    "AttentivePooler",
    "FeatureSet",
    "StaleFeatureCacheError",
    "attentive_probe",
    "checkpoint_fingerprint",
    "draw_lowshot_indices",
    "extract_features",
    "knn_classify",
    "knn_scores",
    "linear_probe",
    "load_features",
    "lowshot_eval",
    "save_features",
]
