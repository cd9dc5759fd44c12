"""Typed run configuration: dataclasses, YAML load/save and ``key=value`` overrides.

The sections and key names follow the official I-JEPA YAML files (``data``, ``logging``, ``mask``,
``meta``, ``optimization``) so those files load unchanged; our own additions are extra keys in the
same sections. Unknown or mistyped keys are rejected with the nearest valid name, and an override
must have the type of the field it replaces.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

PLACEHOLDER_PREFIX = "$replace_this"


class ConfigError(ValueError):
    """A configuration problem, with a message that names the offending key or file."""


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
    target_layers: int = 1
    """Blocks of the target encoder the targets average: 1 (the paper: the last block, after the
    final norm) or K > 1 (the mean of the last K blocks' outputs, each layer-normed)."""
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

_CHOICES: dict[str, tuple[str, ...]] = {
    "mask.mode": ("default", "official"),
    "mask.geometry": ("fixed", "auto"),
    "meta.attn_impl": ("auto", "sdpa", "plain"),
    "optimization.loss": ("smooth_l1", "l2"),
    "optimization.nan_policy": ("stop", "skip"),
    "meta.parallel": ("ddp", "fsdp"),
    "meta.regularizer": ("none", "sigreg"),
    "meta.backbone": ("vit", "energy"),
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


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples where needed."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            # PyYAML reads "1e-3" (no dot, no sign) as a string: accept any numeric spelling
            number = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):  # NaN would slip through every `x < 0` range check
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover - schema bug


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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


def check_placeholders(cfg: Config) -> None:
    """Refuse the official files' ``$replace_this...`` placeholders, naming the key to set."""
    for sec_name, values in cfg.to_dict().items():
        for key, value in values.items():
            if isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX):
                raise ConfigError(
                    f"{sec_name}.{key} is still the placeholder '{value}'; "
                    f"set it, e.g. {sec_name}.{key}=/path/to/..."
                )


def validate(cfg: Config) -> None:
    """Cross-field checks that the type system cannot express."""
    check_placeholders(cfg)
    d, m, o = cfg.data, cfg.mask, cfg.optimization
    if d.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {d.batch_size}")
    if d.shuffle_buffer < 0:
        raise ConfigError(f"data.shuffle_buffer must be >= 0, got {d.shuffle_buffer}")
    if m.patch_size < 1 or d.crop_size % m.patch_size != 0:
        raise ConfigError(
            f"data.crop_size ({d.crop_size}) must be a multiple of mask.patch_size ({m.patch_size})"
        )
    for name in ("crop_scale",):
        lo, hi = getattr(d, name)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"data.{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
    for name in ("enc_mask_scale", "pred_mask_scale"):
        lo, hi = getattr(m, name)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"mask.{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
    if m.fixed_sizes and m.mode != "default":
        raise ConfigError(
            "mask.fixed_sizes needs mask.mode=default (the official sampler's sizes "
            "are the official code's)"
        )
    if not 0 < m.aspect_ratio[0] <= m.aspect_ratio[1]:
        raise ConfigError(f"mask.aspect_ratio must satisfy 0 < min <= max, got {m.aspect_ratio}")
    if m.num_pred_masks < 1 or m.num_enc_masks < 1:
        raise ConfigError("mask.num_pred_masks and mask.num_enc_masks must be >= 1")
    if o.epochs < 1:
        raise ConfigError(f"optimization.epochs must be >= 1, got {o.epochs}")
    if o.warmup < 0 or o.warmup > o.epochs:
        raise ConfigError(
            f"optimization.warmup ({o.warmup}) must lie in [0, optimization.epochs={o.epochs}]"
        )
    if not 0 <= o.ema[0] <= o.ema[1] <= 1:
        raise ConfigError(f"optimization.ema must satisfy 0 <= start <= end <= 1, got {o.ema}")
    if o.ipe_scale <= 0:
        raise ConfigError(f"optimization.ipe_scale must be > 0, got {o.ipe_scale}")
    if o.max_steps is not None and o.max_steps < 1:
        raise ConfigError(f"optimization.max_steps must be >= 1, got {o.max_steps}")
    if cfg.meta.patch_init_std is not None and not cfg.meta.patch_init_std > 0:
        raise ConfigError(f"meta.patch_init_std must be > 0, got {cfg.meta.patch_init_std}")
    depth = cfg.meta.enc_depth
    if cfg.meta.target_layers < 1 or (depth is not None and cfg.meta.target_layers > depth):
        raise ConfigError(
            f"meta.target_layers must be in [1, encoder depth], got {cfg.meta.target_layers}"
        )
    if cfg.meta.reg_slices < 1:
        raise ConfigError(f"meta.reg_slices must be >= 1, got {cfg.meta.reg_slices}")
    if not (cfg.meta.reg_weight >= 0 and math.isfinite(cfg.meta.reg_weight)):
        raise ConfigError(
            f"meta.reg_weight must be a finite number >= 0, got {cfg.meta.reg_weight}"
        )
    _validate_variants(cfg)
    if o.time_limit_min is not None and o.time_limit_min <= 0:
        raise ConfigError(f"optimization.time_limit_min must be > 0, got {o.time_limit_min}")
    for key in ("lr", "start_lr", "final_lr", "weight_decay", "final_weight_decay"):
        if getattr(o, key) < 0:
            raise ConfigError(f"optimization.{key} must be >= 0")
    if cfg.logging.log_every < 1:
        raise ConfigError("logging.log_every must be >= 1")
    from ijepa.trackers import parse_trackers  # light: the tracker packages load on use

    parse_trackers(cfg.logging.trackers)
    for key in ("checkpoint_every", "keep_every"):
        if getattr(cfg.logging, key) < 0:
            raise ConfigError(f"logging.{key} must be >= 0, got {getattr(cfg.logging, key)}")
    if not -(2**63) <= cfg.meta.seed < 2**64:  # what torch.manual_seed accepts
        raise ConfigError(f"meta.seed must lie in [-2**63, 2**64), got {cfg.meta.seed}")


def _validate_variants(cfg: Config) -> None:
    """Checks of the variant switches (backbone, target, teacher, mask strategy, padding)."""
    m, meta = cfg.mask, cfg.meta
    if meta.teacher == "none" and meta.regularizer == "none":
        raise ConfigError(
            "meta.teacher=none needs meta.regularizer=sigreg: without a teacher the targets come "
            "from the trained encoder itself, and nothing but the regulariser stops it from "
            "collapsing to a constant"
        )
    if m.strategy != "multiblock":
        if m.mode != "default":
            raise ConfigError(
                f"mask.mode={m.mode} applies to mask.strategy=multiblock only, not {m.strategy}"
            )
        if m.num_enc_masks != 1:
            raise ConfigError(
                f"mask.strategy={m.strategy} has one context (the targets' complement); "
                f"set mask.num_enc_masks=1 (got {m.num_enc_masks})"
            )
        if m.fixed_sizes:
            raise ConfigError(
                f"mask.fixed_sizes applies to mask.strategy=multiblock only (the {m.strategy} "
                "strategy's sizes are fixed per batch already)"
            )
    if meta.target_layers > 1 and (meta.target != "latent" or meta.teacher != "ema"):
        raise ConfigError(
            "meta.target_layers > 1 averages the EMA target encoder's blocks; it does not go "
            f"with meta.target={meta.target} / meta.teacher={meta.teacher}"
        )
    if meta.backbone == "energy" and meta.target_layers > meta.energy_steps:
        raise ConfigError(
            f"meta.target_layers ({meta.target_layers}) must be at most meta.energy_steps "
            f"({meta.energy_steps}) with meta.backbone=energy (its layers are descent steps)"
        )
    if m.pad:
        clash = [
            name
            for name, on in (
                ("mask.mode=official", m.mode == "official"),
                ("mask.fixed_sizes=true", m.fixed_sizes),
                ("meta.pred_shared_context=true", meta.pred_shared_context),
            )
            if on
        ]
        if clash:
            raise ConfigError(
                f"mask.pad=true keeps every mask whole; it does not go with {', '.join(clash)} "
                "(the official sampler and fixed sizes subsample masks, the shared-context "
                "predictor pass has no padding mask)"
            )
    if meta.energy_steps < 1:
        raise ConfigError(f"meta.energy_steps must be >= 1, got {meta.energy_steps}")
    if not meta.energy_step_size > 0:
        raise ConfigError(f"meta.energy_step_size must be > 0, got {meta.energy_step_size}")


def dataset_spec(cfg: Config) -> str:
    """The dataset spec a run uses: the official ``root_path``/``image_folder`` pair wins."""
    d = cfg.data
    if d.root_path and d.image_folder:
        return f"imagefolder:{Path(d.root_path) / d.image_folder}"
    return d.dataset
