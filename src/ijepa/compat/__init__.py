"""Interoperability: official checkpoints, transformers, timm and safetensors, both ways.

* :func:`load_encoder` (:mod:`~ijepa.compat.formats`) reads any supported file into a ready
  encoder plus its preprocessing;
* :mod:`~ijepa.compat.official`: the official ``.pth.tar`` layout (``to_official``/``from_official``);
* :mod:`~ijepa.compat.transformers`: transformers ``IJepaModel`` folders (``save_hf``/``load_hf``);
* :mod:`~ijepa.compat.timm`: timm ``*_gap`` ViT weights (``save_timm``/``load_timm``);
* :mod:`~ijepa.compat.safetensors_io`: safetensors with our metadata.

Neither transformers nor timm is needed to write or read their formats.
"""

from ijepa.compat.arch import ConversionError, EncoderMeta, encoder_model_args, infer_model_args
from ijepa.compat.formats import (
    FORMATS,
    build_transform,
    detect_format,
    load_encoder,
    read_encoder,
    save_encoder,
)
from ijepa.compat.official import from_official, select_encoder, to_official
from ijepa.compat.timm import load_timm, save_timm
from ijepa.compat.transformers import load_hf, save_hf

__all__ = [
    "FORMATS",
    "ConversionError",
    "EncoderMeta",
    "build_transform",
    "detect_format",
    "encoder_model_args",
    "from_official",
    "infer_model_args",
    "load_encoder",
    "load_hf",
    "load_timm",
    "read_encoder",
    "save_encoder",
    "save_hf",
    "save_timm",
    "select_encoder",
    "to_official",
]
