"""A sharded (DCP) training checkpoint as our single-file checkpoint (``ijepa convert --from dcp``).

The networks are rebuilt on the CPU from the checkpoint's ``model_args``, DCP reads the full
tensors into them in one process (no process group), and the result has exactly the layout the
single-file writer produces for a run of the same world size: module state dicts, the id-keyed
optimizer state, the run facts and every rank's RNG state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ijepa import checkpoint as ckpt_file
from ijepa import sharded_checkpoint as sharded
from ijepa.models import build_models
from ijepa.train.optim import build_optimizer
from ijepa.train.parallel import ParallelModels, optimizer_param_names, optimizer_state_to_ids

__all__ = ["sharded_to_state"]


def sharded_to_state(path: str | Path) -> dict[str, Any]:
    """Read a sharded checkpoint folder whole, in the single-file checkpoint layout.

    Raises:
        CheckpointError: not a complete sharded checkpoint, or one that does not match its own
            ``model_args``.
    """
    facts = sharded.read_sharded_meta(path)
    model_args = facts.get("model_args")
    if not isinstance(model_args, dict):
        raise ckpt_file.CheckpointError(f"sharded checkpoint {path} records no model_args")
    models = build_models(model_args)
    optimizer = build_optimizer(models.encoder, models.predictor, lr=0.0, weight_decay=0.0)
    whole = ParallelModels(models=models, step_models=models, mode="single")
    template = whole.sharded_state(optimizer)  # whole tensors; the optimizer state initialised
    sharded.load_sharded(path, template, this_process_only=True)
    names = optimizer_param_names(optimizer.param_groups, models.encoder, models.predictor)
    try:
        opt = optimizer_state_to_ids(template["optim"], names)
    except (KeyError, ValueError) as err:
        raise ckpt_file.CheckpointError(
            f"sharded checkpoint {path}: bad optimizer state: {err}"
        ) from err
    rng_ranks = facts.pop("rng_ranks", None)
    facts.pop("keep", None)
    state: dict[str, Any] = {
        **facts,
        **{part: dict(sd) for part, sd in template["models"].items()},
        "opt": opt,
        "scaler": None,
    }
    if isinstance(rng_ranks, list) and rng_ranks:
        state["rng"], state["rng_ranks"] = rng_ranks[0], rng_ranks
    return state
