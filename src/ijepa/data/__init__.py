"""Data: labelled image sets (in memory or from files) and image transforms.

Knows nothing of models. Entry points:

- :func:`load_imageset` turns a spec (``"embedded"``, ``"fashion-mnist[:DIR]"``,
  ``"imagefolder:DIR"``, ``"hf:PATH"``, ``"webdataset:PATTERN"``) and a split into an
  :class:`ImageSet`;
- :func:`train_transform_batch` / :func:`eval_transform_batch` transform whole uint8 batches;
- :class:`ImageFolderDataset` streams image files, skipping and counting bad ones;
- :class:`WebDatasetStream` streams WebDataset tar shards (split over ranks and workers,
  shuffled, bad samples skipped and counted); :func:`write_imagefolder_shards` writes them;
- :func:`official_train_transform` is the official per-image training pipeline;
  :func:`eval_transform` is :func:`eval_transform_batch` for one image (the one evaluation
  transform, timm's ``crop_pct`` convention).
"""

from ijepa.data.embedded import SHAPES, generate_scenes
from ijepa.data.fashion_mnist import read_idx
from ijepa.data.folder import ImageFolderDataset, SkippedFile, load_rgb
from ijepa.data.imageset import ImageSet, channel_stats
from ijepa.data.load import load_imagefolder, load_imageset
from ijepa.data.shard_sets import write_imagefolder_shards
from ijepa.data.shards import WebDatasetStream
from ijepa.data.spec import KINDS, DataSpecError, parse_spec
from ijepa.data.transforms import (
    DEFAULT_CROP_PCT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    eval_transform,
    eval_transform_batch,
    normalize_batch,
    official_train_transform,
    sample_crop_boxes,
    train_transform_batch,
)

__all__ = [
    "DEFAULT_CROP_PCT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINDS",
    "SHAPES",
    "DataSpecError",
    "EvalTransform",
    "ImageFolderDataset",
    "ImageSet",
    "SkippedFile",
    "WebDatasetStream",
    "channel_stats",
    "eval_transform",
    "eval_transform_batch",
    "generate_scenes",
    "load_imagefolder",
    "load_imageset",
    "load_rgb",
    "normalize_batch",
    "official_train_transform",
    "parse_spec",
    "read_idx",
    "sample_crop_boxes",
    "train_transform_batch",
    "write_imagefolder_shards",
]
