"""The official I-JEPA checkpoint layout (``.pth.tar``): read it, and write ours in it.

An official checkpoint is a dict with ``encoder``, ``predictor``, ``target_encoder`` (state dicts
saved from DDP, so every key starts with ``module.``), ``opt``, ``scaler``, ``epoch``, ``loss``,
``batch_size``, ``world_size`` and ``lr``. Ours has the same keys without prefixes, plus
``format_version``, ``step``, ``config``, ``model_args`` and ``rng``.

The optimizer states differ in grouping. The official AdamW has four groups built from
``named_parameters()`` (frozen positional tables included): encoder decayed, predictor decayed,
encoder not decayed (``WD_exclude``), predictor not decayed; a parameter is "not decayed" when its
name contains ``bias`` or it is 1-D. Ours (:func:`ijepa.train.optim.param_groups`) has two groups
over the trainable parameters of encoder then predictor. The conversion maps each parameter's
moments by name, so the official code can resume from our files and our trainer from theirs.

Which encoder: the paper evaluates the **target** (EMA) encoder; transformers and timm convert the
**context** encoder (``encoder``). :func:`select_encoder` takes either and logs which.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from ijepa.checkpoint import FORMAT_VERSION, strip_prefix
from ijepa.compat.arch import ConversionError, check_models, meta_models, model_args_of
from ijepa.models import JEPAModels
from ijepa.train.optim import param_groups

__all__ = [
    "ENCODER_KEYS",
    "from_official",
    "is_training_checkpoint",
    "select_encoder",
    "to_official",
]

logger = logging.getLogger(__name__)

ENCODER_KEYS = {"target": "target_encoder", "context": "encoder"}
_NETS = ("encoder", "predictor", "target_encoder")
_PLAIN_KEYS = ("epoch", "loss", "batch_size", "world_size", "lr")
# What torch.amp.GradScaler().state_dict() holds at its defaults.
_DEFAULT_SCALER = {
    "scale": 65536.0,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2000,
    "_growth_tracker": 0,
}


def is_training_checkpoint(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` holds an I-JEPA encoder state dict (ours or official)."""
    return any(isinstance(state.get(k), Mapping) for k in ("encoder", "target_encoder"))


def select_encoder(
    state: Mapping[str, Any], which: str = "target", what: str = "checkpoint"
) -> dict[str, Any]:
    """The state dict (prefixes stripped) of the target or the context encoder.

    Args:
        state: a training checkpoint, ours or official.
        which: ``"target"`` (EMA encoder, used for evaluation in the paper) or ``"context"``.
        what: names the file in messages.

    Raises:
        ConversionError: unknown ``which`` or the checkpoint lacks that encoder.
    """
    if which not in ENCODER_KEYS:
        raise ConversionError(f"which must be 'target' or 'context', got {which!r}")
    key = ENCODER_KEYS[which]
    sd = state.get(key)
    if not isinstance(sd, Mapping):
        other = "context" if which == "target" else "target"
        hint = f"; it has the {other} encoder (choose it with which='{other}')"
        raise ConversionError(
            f"{what} has no '{key}' state dict{hint if ENCODER_KEYS[other] in state else ''}"
        )
    logger.info(
        "%s: using the %s encoder ('%s')%s",
        what,
        which,
        key,
        " - the EMA weights the paper evaluates" if which == "target" else "",
    )
    return strip_prefix(sd)


def _qualified(models: JEPAModels) -> tuple[dict[int, str], list[tuple[str, nn.Parameter]]]:
    """``id(param) -> "encoder.x" / "predictor.x"`` and all named parameters in order."""
    named: list[tuple[str, nn.Parameter]] = []
    for prefix in ("encoder", "predictor"):
        for name, p in getattr(models, prefix).named_parameters():
            named.append((f"{prefix}.{name}", p))
    return {id(p): n for n, p in named}, named


def _official_group_names(models: JEPAModels) -> list[list[str]]:
    """Parameter names of the four official AdamW groups, in order."""
    groups: list[list[str]] = [[], [], [], []]
    for prefix, offset in (("encoder", 0), ("predictor", 1)):
        for name, p in getattr(models, prefix).named_parameters():
            no_decay = "bias" in name or p.ndim == 1
            groups[offset + 2 * no_decay].append(f"{prefix}.{name}")
    return groups


def _our_group_names(models: JEPAModels) -> list[list[str]]:
    """Parameter names of our two AdamW groups (decayed, not decayed), in order."""
    name_of, _ = _qualified(models)
    return [
        [name_of[id(p)] for p in g["params"]]
        for g in param_groups(models.encoder, models.predictor)
    ]


def _regroup(
    opt: Mapping[str, Any],
    src: list[list[str]],
    dst: list[list[str]],
    hparams: list[dict[str, Any]],
    what: str,
) -> dict[str, Any]:
    """Re-index an optimizer state dict from the ``src`` grouping to the ``dst`` one, by name."""
    groups = opt.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(src):
        n = len(groups) if isinstance(groups, list) else 0
        raise ConversionError(f"{what}: optimizer has {n} parameter groups, expected {len(src)}")
    name_of: dict[int, str] = {}
    for i, (group, names) in enumerate(zip(groups, src, strict=True)):
        if len(group["params"]) != len(names):
            raise ConversionError(
                f"{what}: optimizer group {i} has {len(group['params'])} parameters, the model "
                f"needs {len(names)}"
            )
        name_of.update(zip(group["params"], names, strict=True))
    by_name = {name_of[idx]: s for idx, s in opt.get("state", {}).items()}
    wanted = {n for names in dst for n in names}
    dropped = sorted(n for n in by_name if n not in wanted)
    if dropped:
        raise ConversionError(
            f"{what}: optimizer state for parameters the target layout freezes: {dropped}"
        )
    state: dict[int, Any] = {}
    new_groups = []
    index = 0
    for names, hp in zip(dst, hparams, strict=True):
        ids = []
        for name in names:
            if name in by_name:
                state[index] = by_name[name]
            ids.append(index)
            index += 1
        new_groups.append({**hp, "params": ids})
    return {"state": state, "param_groups": new_groups}


def _hparams(group: Mapping[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params" and k not in drop}


def _prefixed(sd: Mapping[str, Any]) -> dict[str, Any]:
    return {f"module.{k}": v for k, v in strip_prefix(sd).items()}


def _uses_bf16(state: Mapping[str, Any]) -> bool:
    config = state.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("meta"), Mapping):
        return bool(config["meta"].get("use_bfloat16", True))
    return True


def to_official(state: Mapping[str, Any], what: str = "checkpoint") -> dict[str, Any]:
    """Our training checkpoint in the official layout, ready for the official code to resume.

    Network state dicts get the ``module.`` prefix and the optimizer state is regrouped into the
    official four groups. ``scaler`` holds a default ``GradScaler`` state when the run used bf16:
    the official code then builds a GradScaler and loads ``checkpoint['scaler']`` into it, which
    fails on ``None`` (and its blanket ``except`` would silently restart from epoch 0). Our
    ``model_args``, ``config`` and ``step`` are kept as extra keys, which the official code ignores.
    """
    missing = [k for k in _NETS if not isinstance(state.get(k), Mapping)]
    if missing:
        raise ConversionError(f"{what}: the official layout needs {missing}, which it lacks")
    model_args = model_args_of(state, what)
    variants = {k: model_args[k] for k in ("backbone", "target", "input_norm") if k in model_args}
    if variants:
        raise ConversionError(
            f"{what}: the official code has only the ViT encoder, latent targets and no "
            f"per-image input standardisation, so a "
            f"checkpoint with {variants} cannot be converted to its layout"
        )
    check_models(state, model_args, what)
    out: dict[str, Any] = {k: _prefixed(state[k]) for k in _NETS}
    opt = state.get("opt")
    if isinstance(opt, Mapping) and opt.get("param_groups"):
        models = meta_models(model_args)
        ours = opt["param_groups"]
        if len(ours) != 2:
            raise ConversionError(f"{what}: expected our 2 optimizer groups, found {len(ours)}")
        decay = _hparams(ours[0], ("apply_wd",))
        no_decay = {**_hparams(ours[1], ("apply_wd",)), "WD_exclude": True}
        out["opt"] = _regroup(
            opt,
            _our_group_names(models),
            _official_group_names(models),
            [decay, decay, no_decay, no_decay],
            what,
        )
    else:
        logger.warning("%s has no optimizer state; the official file gets opt=None", what)
        out["opt"] = None
    out["scaler"] = dict(_DEFAULT_SCALER) if _uses_bf16(state) else None
    defaults = {"epoch": 0, "loss": float("nan"), "batch_size": None, "world_size": 1, "lr": None}
    for key in _PLAIN_KEYS:
        out[key] = state.get(key, defaults[key])
    out["model_args"] = model_args
    for key in ("config", "step"):
        if key in state:
            out[key] = state[key]
    return out


def from_official(state: Mapping[str, Any], what: str = "checkpoint") -> dict[str, Any]:
    """An official-layout checkpoint as ours (prefixes stripped, optimizer regrouped).

    ``model_args`` are taken from the file if it records them, else inferred from the shapes.
    Our trainer resumes from the result at ``epoch * iterations_per_epoch`` when no ``step`` is
    recorded; the ``scaler`` is dropped (we never scale bf16 losses).
    """
    missing = [k for k in _NETS if not isinstance(state.get(k), Mapping)]
    if missing:
        raise ConversionError(f"{what}: a training checkpoint needs {missing}, which it lacks")
    model_args = model_args_of(state, what)
    check_models(state, model_args, what)
    out: dict[str, Any] = {"format_version": FORMAT_VERSION}
    out.update({k: strip_prefix(state[k]) for k in _NETS})
    opt = state.get("opt")
    if isinstance(opt, Mapping) and opt.get("param_groups"):
        models = meta_models(model_args)
        theirs = opt["param_groups"]
        if len(theirs) != 4:
            raise ConversionError(
                f"{what}: expected 4 official optimizer groups, found {len(theirs)}"
            )
        decay = {**_hparams(theirs[0], ("WD_exclude",)), "apply_wd": True}
        for a, b in ((0, 1), (2, 3)):
            if _hparams(theirs[a], ()) != _hparams(theirs[b], ()):
                logger.warning(
                    "%s: official optimizer groups %d and %d differ in settings; using group %d's",
                    what,
                    a,
                    b,
                    a,
                )
        no_decay = {**_hparams(theirs[2], ("WD_exclude",)), "apply_wd": False}
        out["opt"] = _regroup(
            opt, _official_group_names(models), _our_group_names(models), [decay, no_decay], what
        )
    else:
        out["opt"] = None
    out["scaler"] = None
    for key in _PLAIN_KEYS:
        if key in state:
            out[key] = state[key]
    out["model_args"] = model_args
    for key in ("config", "step"):
        if key in state:
            out[key] = state[key]
    return out
