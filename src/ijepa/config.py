"""Typed run configuration: dataclasses, YAML load/save and ``key=value`` overrides.

The sections and key names follow the official I-JEPA YAML files (``data``, ``logging``, ``mask``,
``meta``, ``optimization``) so those files load unchanged; our own additions are extra keys in the
same sections. Unknown or mistyped keys are rejected with the nearest valid name, and an override
must have the type of the field it replaces.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ijepa.config_types import _coerce, _plain, _section_types, _suggest
from ijepa.errors import ConfigError as ConfigError  # raised here, defined below every room


@dataclass
class DataConfig:
    """Where images come from and how they are augmented."""

    dataset: str = "embedded"
    """Dataset spec: ``embedded``, ``fashion-mnist[:DIR]``, ``imagefolder:DIR``, ``hf:PATH`` or
    ``webdataset:PATTERN`` (tar shards, streamed).
    Ignored when ``root_path`` and ``image_folder`` are both set (official layout)."""
    batch_size: int = 128
    """Images per step on each process."""
    crop_size: int = 224
    """Side of the square training crop in pixels."""
    crop_scale: tuple[float, float] = (0.3, 1.0)
    """RandomResizedCrop area range."""
    use_horizontal_flip: bool = False
    use_color_distortion: bool = False
    color_jitter_strength: float = 0.0
    use_gaussian_blur: bool = False
    num_workers: int = 2
    """DataLoader workers for file datasets (in-memory sets need none)."""
    pin_mem: bool = True
    root_path: str | None = None
    """Official layout: the datasets directory (used with ``image_folder``)."""
    image_folder: str | None = None
    """Official layout: the folder under ``root_path`` holding ``train/``."""
    max_images: int | None = None
    """Use only the first N training images (for quick runs)."""
    shuffle_buffer: int = 1000
    """``webdataset:`` streams: samples held by each worker's shuffle buffer (0: none)."""


@dataclass
class LoggingConfig:
    """Run folder, metrics and checkpoint cadence."""

    folder: str = "runs/ijepa"
    """Run folder: metrics, resolved config and checkpoints live here."""
    write_tag: str = "jepa"
    """Prefix of checkpoint and log file names."""
    log_every: int = 10
    """Steps between metric records (the only steps that synchronise with the device)."""
    checkpoint_every: int = 0
    """Steps between ``latest`` checkpoints; 0 means at the end of every epoch."""
    keep_every: int = 0
    """Also keep a numbered checkpoint every N steps (0: keep only ``latest``)."""
    progress: bool = True
    """Show a progress bar."""
    trackers: str = ""
    """Experiment trackers besides ``metrics.jsonl``, comma-separated: ``tensorboard``,
    ``wandb`` (each an optional extra); empty: none."""
    wandb_project: str = "ijepa"
    """W&B project of the ``wandb`` tracker."""
    wandb_mode: str | None = None
    """W&B mode: ``online`` or ``offline`` (sync later with ``wandb sync``); None: W&B's
    default (which reads ``WANDB_MODE``)."""
    checkpoint_failure: str = "stop"
    """When writing a checkpoint fails (full disk, read-only folder): ``stop`` with a clear error
    (the previous checkpoint stays intact), or ``retry``: warn, count, keep training and try again
    at the next checkpoint step (the run's last checkpoint must still succeed)."""


@dataclass
class MaskConfig:
    """Multi-block masking (see docs: masks)."""

    allow_overlap: bool = False
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    enc_mask_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 10
    num_enc_masks: int = 1
    num_pred_masks: int = 4
    patch_size: int = 16
    pred_mask_scale: tuple[float, float] = (0.15, 0.2)
    mode: str = "default"
    """``default`` (fixed sampler) or ``official`` (reproduces the official sampler's sizes)."""
    per_image_size: bool = False
    """Draw block sizes per image instead of once per batch."""
    geometry: str = "fixed"
    """``fixed``: the sizes and counts above as given. ``auto``: on a patch grid smaller than
    :data:`ijepa.masks.SMALL_GRID` a side, at most 2 target blocks and ``min_keep`` at most 4 (on
    a 7x7 grid four targets of 15-20 % leave the context 4-14 patches, mostly border; see
    ``docs/recipes.md``); larger grids keep the values above. The CPU presets use ``auto``."""
    fixed_sizes: bool = False
    """Static shapes: every step has the same context and target token counts (longer masks
    subsampled, contexts below the count resampled; ``mode: default`` only), so that
    ``meta.compile`` traces the step once (see :mod:`ijepa.masks.fixed`)."""
    pad: bool = False
    """Keep every patch of every mask: pad shorter masks with -1 up to the batch's longest and
    leave the padding out of attention, loss and regulariser, instead of subsampling longer masks
    to the shortest (``mode: default``; see docs/variants.md)."""
    strategy: str = "multiblock"
    """Masking strategy: ``multiblock`` (the paper's), or the paper's ablations ``random`` (60 % of
    the patches at random are targets), ``block`` (one target block of 60 %) and ``raster`` (one
    quadrant is the context, the other three are targets); see docs/variants.md. The ablation
    strategies fix their own block counts and sizes (``num_pred_masks``, ``pred_mask_scale`` and
    ``enc_mask_scale`` apply to ``multiblock`` only)."""


@dataclass
class MetaConfig:
    """Model choice and run-wide switches."""

    model_name: str = "vit_base"
    """Encoder size: vit_tiny, vit_small, vit_base, vit_large, vit_huge, vit_giant."""
    pred_depth: int = 6
    pred_emb_dim: int = 384
    enc_depth: int | None = None
    """Encoder depth; None keeps the size's (our addition, for small-CPU recipes)."""
    enc_emb_dim: int | None = None
    """Encoder width; None keeps the size's."""
    enc_num_heads: int | None = None
    """Encoder (and predictor) heads; None keeps the size's."""
    patch_init_std: float | None = None
    """Init std of the patch embedding; None: the official 0.02 (raise it for small patches)."""
    input_norm: str = "none"
    """``none`` (the paper) or ``image``: the encoders standardise each image (its own mean and
    deviation over all pixels) before the patch embedding, so overall brightness and contrast,
    a nuisance that can dominate pooled features, never reach them (docs/variants.md)."""
    use_bfloat16: bool | str = True
    """bf16 autocast: ``true``, ``false``, or ``auto``: measured at the start of training for the
    run's shapes on this machine (:mod:`ijepa.train.precision`)."""
    pred_shared_context: bool = False
    """One predictor pass for all target blocks: the context tokens once, then every block's mask
    tokens; context attends to context only, block i to the context and block i. Fewer FLOPs
    than the official pairing (context repeated per block), not the same computation."""
    load_checkpoint: bool = False
    """Official key: resume from ``read_checkpoint`` (we also resume automatically from the run folder)."""
    read_checkpoint: str | None = None
    copy_data: bool = False
    """Official key, accepted and ignored (it copied data to local disk on the FAIR cluster)."""
    seed: int = 0
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    attn_impl: str = "auto"
    """``auto`` (both kernels timed per shape at run time, the faster used; ``sdpa`` under
    ``deterministic``), ``sdpa`` or ``plain``."""
    compile: bool = False
    """Wrap the models with ``torch.compile``."""
    deterministic: bool = False
    """Deterministic algorithms (for exact-resume checks)."""
    drop_path_rate: float = 0.0
    parallel: str = "ddp"
    """Multi-process mode: ``ddp`` (replicated weights) or ``fsdp`` (FSDP2, sharded weights,
    gradients and optimizer state, for ViT-H/g); ignored with one process."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's forward in backward (less activation memory, one extra
    forward pass of the blocks per step)."""
    backbone: str = "vit"
    """Encoder architecture: ``vit`` or ``energy`` (the Energy Transformer: one shared block of
    energy attention and a Hopfield network, ``energy_steps`` steps of descent on its energy;
    width and heads from ``enc_emb_dim``/``enc_num_heads`` or the size, ``enc_depth`` unused)."""
    energy_steps: int = 12
    """``backbone=energy``: descent steps T (the paper's 12)."""
    energy_step_size: float = 0.1
    """``backbone=energy``: descent step size (the authors' code uses 0.1)."""
    target: str = "latent"
    """What the predictor predicts: ``latent`` (the target encoder's representations, the paper)
    or ``pixels`` (per-patch normalised pixels of the target blocks, through a linear head on the
    predictor: the paper's pixel-target ablation)."""
    teacher: str = "ema"
    """``ema`` (the target encoder is an EMA of the context encoder) or ``none`` (LeJEPA's
    EMA-free form: targets come from the context encoder's own full-image pass, with gradients;
    needs ``regularizer=sigreg``; see docs/variants.md)."""
    target_layers: int | str = 1
    """Blocks of the target encoder the targets average: 1 (the paper: the last block, after the
    final norm), K > 1 (the mean of the last K blocks' outputs, each layer-normed) or ``all``
    (every block: the encoder's depth, or ``energy_steps`` with the energy backbone)."""
    regularizer: str = "none"
    """Anti-collapse term added to the loss: ``none`` (the paper) or ``sigreg`` (LeJEPA's sketched
    isotropic Gaussian regulariser of the context embeddings; see :mod:`ijepa.train.regularizers`)."""
    reg_weight: float = 0.05
    """Weight of the regulariser: ``loss = jepa_loss + reg_weight * regulariser``."""
    reg_slices: int = 64
    """SIGReg: random directions per step (LeJEPA uses 256; 64 costs a quarter on a CPU, and the
    directions change every step)."""
    reg_on: str = "pooled"
    """What the regulariser sees: ``pooled`` (each image's mean context token) or ``tokens``."""
    dist_timeout_s: float = 600.0
    """Collective timeout in seconds: a hung rank ends the job after this long (plus up to 10 s
    to name the unresponsive ranks); a dead one is noticed at once."""


@dataclass
class OptimizationConfig:
    """Optimiser and schedules (pure functions of the step)."""

    ema: tuple[float, float] = (0.996, 1.0)
    epochs: int = 300
    final_lr: float = 1.0e-6
    final_weight_decay: float = 0.4
    ipe_scale: float = 1.0
    lr: float = 1.0e-3
    start_lr: float = 2.0e-4
    warmup: float = 40
    """Warm-up length in epochs (may be fractional)."""
    weight_decay: float = 0.04
    loss: str = "smooth_l1"
    """``smooth_l1`` (official code) or ``l2`` (paper text)."""
    max_steps: int | None = None
    """Stop after this many steps (schedules still span the full run)."""
    time_limit_min: float | None = None
    """Wall-clock limit in minutes, counted from the start of this ``train`` call: stop cleanly at
    the first step boundary past it (at a log step with several processes), writing a checkpoint;
    schedules still span the full run, and running the same command again resumes. None: no
    limit."""
    nan_policy: str = "stop"
    """On a non-finite loss: ``stop`` with a clear error, or ``skip`` the step and count it."""


@dataclass
class Config:
    """A whole run."""

    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), suitable for YAML or a checkpoint."""
        return _plain(dataclasses.asdict(self))


#: Boolean keys that also take the string ``auto`` (decided by measurement at run time).
_BOOL_OR_AUTO = frozenset({"meta.use_bfloat16"})
#: Integer keys that also take the string ``all``.
_INT_OR_ALL = frozenset({"meta.target_layers"})

_CHOICES: dict[str, tuple[str, ...]] = {
    "mask.mode": ("default", "official"),
    "mask.geometry": ("fixed", "auto"),
    "meta.attn_impl": ("auto", "sdpa", "plain"),
    "optimization.loss": ("smooth_l1", "l2"),
    "optimization.nan_policy": ("stop", "skip"),
    "meta.parallel": ("ddp", "fsdp"),
    "meta.regularizer": ("none", "sigreg"),
    "meta.backbone": ("vit", "energy"),
    "meta.input_norm": ("none", "image"),
    "meta.target": ("latent", "pixels"),
    "meta.teacher": ("ema", "none"),
    "mask.strategy": ("multiblock", "random", "block", "raster"),
    "meta.reg_on": ("pooled", "tokens"),
    "logging.checkpoint_failure": ("stop", "retry"),
    "logging.wandb_mode": ("online", "offline"),
    "meta.model_name": (
        "vit_tiny",
        "vit_small",
        "vit_base",
        "vit_large",
        "vit_huge",
        "vit_giant",
    ),
}


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict, rejecting unknown keys and wrong types.

    Args:
        raw: ``{section: {key: value}}`` as read from YAML.
        source: what to call the input in error messages (a file name).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    cfg = Config()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for sec_name, sec_values in raw.items():
        if sec_name not in sections:
            raise ConfigError(
                f"{source}: unknown section '{sec_name}'{_suggest(sec_name, sections)}"
            )
        if sec_values is None:
            continue
        if not isinstance(sec_values, dict):
            raise ConfigError(f"{source}: section '{sec_name}' must be a mapping")
        section = getattr(cfg, sec_name)
        hints = _section_types(type(section))
        for key, value in sec_values.items():
            _set_field(section, hints, sec_name, key, value, source)
    return cfg


def _set_field(
    section: Any, hints: dict[str, Any], sec_name: str, key: str, value: Any, source: str
) -> None:
    full = f"{sec_name}.{key}"
    if key not in hints:
        raise ConfigError(f"{source}: unknown key '{full}'{_suggest(key, hints)}")
    value = _coerce(value, hints[key], f"{source}: {full}")
    if full in _BOOL_OR_AUTO and isinstance(value, str) and value != "auto":
        raise ConfigError(f"{source}: {full}: expected true or false (or auto), got {value!r}")
    if full in _INT_OR_ALL and isinstance(value, str) and value != "all":
        raise ConfigError(f"{source}: {full}: expected an integer (or all), got {value!r}")
    choices = _CHOICES.get(full)
    if choices is not None and value is not None and value not in choices:
        raise ConfigError(f"{source}: {full} must be one of {', '.join(choices)}; got {value!r}")
    setattr(section, key, value)


def load_config(path: str | Path) -> Config:
    """Read a YAML config file (ours or an official one)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    return config_from_dict(raw or {}, source=str(path))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True))


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML) and return a new config."""
    out = config_from_dict(cfg.to_dict())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        dotted, text = item.split("=", 1)
        if "." not in dotted:
            raise ConfigError(
                f"override '{item}': name a section and a key, e.g. data.batch_size=64"
            )
        sec_name, key = dotted.split(".", 1)
        sections = {f.name for f in dataclasses.fields(Config)}
        if sec_name not in sections:
            raise ConfigError(
                f"override '{item}': unknown section '{sec_name}'{_suggest(sec_name, sections)}"
            )
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': value is not valid YAML ({err})") from err
        section = getattr(out, sec_name)
        _set_field(section, _section_types(type(section)), sec_name, key, value, "override")
    return out


def dataset_spec(cfg: Config) -> str:
    """The dataset spec a run uses: the official ``root_path``/``image_folder`` pair wins."""
    d = cfg.data
    if d.root_path and d.image_folder:
        return f"imagefolder:{Path(d.root_path) / d.image_folder}"
    return d.dataset


# the cross-field checks live in their own module; re-exported here (they see ``Config`` only
# as a type, so this import makes no circle)
from ijepa.config_checks import (  # noqa: E402
    PLACEHOLDER_PREFIX as PLACEHOLDER_PREFIX,
)
from ijepa.config_checks import check_placeholders as check_placeholders  # noqa: E402
from ijepa.config_checks import validate as validate  # noqa: E402
