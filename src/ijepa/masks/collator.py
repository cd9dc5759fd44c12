"""DataLoader ``collate_fn`` that collates samples and attaches masks (any strategy).

Each batch's masks follow the package's one seeding rule, :func:`ijepa.masks.rng.step_masks`
(this rank's columns of the global batch sampled from ``make_generator(seed, step)``, the masks a
training step uses), and ``step`` advances by one per batch, so the masks are a pure function of
``(seed, step)``, the rank and the world size; ``state_dict`` / ``load_state_dict`` carry ``step``
over a resume.

DataLoader workers each run a copy of the collator. Worker ``w`` of ``n`` gives its ``j``-th batch
step ``start + j*n + w``: the DataLoader hands batch ``k`` of an iterator to worker ``k % n``, so
batch ``k`` gets step ``start + k``, exactly as in a single process. Each worker records its
progress in a small shared-memory tensor; the main-process collator folds it into ``step`` when it
is read or saved and right before worker processes are forked or pickled (i.e. when a new
iterator starts), so the next epoch continues the sequence without any call from the training
loop. Batches prefetched but never consumed still count (steps are skipped, never repeated). With
``persistent_workers=True`` steps stay unique, and equal the single-process ones when every epoch
has a multiple of ``num_workers`` batches.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate, get_worker_info

from ijepa.masks.rng import step_masks
from ijepa.masks.strategies import MaskSampler

__all__ = ["MaskCollator"]

MAX_WORKERS = 256  # worker slots in the shared progress tensor

_live: weakref.WeakSet[MaskCollator] = weakref.WeakSet()
_fork_hook_installed = False


def _sync_live_collators() -> None:
    """Fold worker progress into every live collator (runs in the parent before a fork)."""
    for collator in list(_live):
        collator._sync()


def _watch(collator: MaskCollator) -> None:
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_sync_live_collators)
        _fork_hook_installed = True
    _live.add(collator)


class MaskCollator:
    """Collate a list of samples and sample the batch's masks.

    Args:
        generator: The mask sampler (any strategy, see :func:`ijepa.masks.make_mask_sampler`).
        seed: Run seed mixed into every step's generator.
        rank: Data-parallel rank: which columns of the global batch's masks this copy keeps.
        step: First step to use (default 0).
        world_size: Number of data-parallel processes (each with batches of the same size).

    Raises:
        ValueError: ``rank`` is not in ``[0, world_size)``.
    """

    def __init__(
        self,
        generator: MaskSampler,
        seed: int,
        rank: int = 0,
        step: int = 0,
        *,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"MaskCollator: rank {rank} is not in [0, world_size={world_size})")
        self.mask_generator = generator
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self._step = int(step)
        # next step after the last batch of each worker slot; 0 = no batch yet
        self._progress = torch.zeros(MAX_WORKERS, dtype=torch.long).share_memory_()
        self._worker_calls = 0  # batches made by this copy inside a DataLoader worker
        _watch(self)

    @property
    def step(self) -> int:
        """The step the next single-process batch (or the next iterator's first batch) uses."""
        self._sync()
        return self._step

    def _sync(self) -> None:
        if get_worker_info() is None:  # only the main-process copy owns the count
            self._step = max(self._step, int(self._progress.max()))

    def __call__(self, samples: Sequence[Any]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Collate ``samples`` and sample their masks.

        Args:
            samples: The ``B`` samples of one batch, as a Dataset returns them.

        Returns:
            ``(default_collate(samples), masks_enc (nenc, B, Kc), masks_pred (npred, B, Kt))``.
        """
        batch = default_collate(list(samples))
        info = get_worker_info()
        if info is None:
            self._sync()
            step = self._step
            self._step += 1
        else:
            if info.id >= MAX_WORKERS:
                raise ValueError(f"MaskCollator supports at most {MAX_WORKERS} DataLoader workers")
            step = self._step + self._worker_calls * info.num_workers + info.id
            self._worker_calls += 1
            if step + 1 > int(self._progress[info.id]):
                self._progress[info.id] = step + 1
        masks_enc, masks_pred = step_masks(
            self.mask_generator,
            self.seed,
            step,
            len(samples),
            rank=self.rank,
            world_size=self.world_size,
        )
        return batch, masks_enc, masks_pred

    def state_dict(self) -> dict[str, int]:
        """The next step and the seeding, enough to continue the same mask sequence."""
        return {
            "step": self.step,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` (the next batch uses ``state["step"]``).

        Only ``step`` is restored. A saved ``seed`` must match this collator's (a mismatch would
        silently change the masks); ``rank`` is not checked, since every rank may load rank 0's
        state (all ranks share the step).

        Raises:
            KeyError: ``step`` is missing.
            ValueError: the saved ``seed`` differs from this collator's.
        """
        if "step" not in state:
            raise KeyError(f"MaskCollator.load_state_dict: 'step' missing from {sorted(state)}")
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(
                f"MaskCollator.load_state_dict: saved seed={state['seed']} differs from this "
                f"collator's seed={self.seed}"
            )
        self._step = int(state["step"])
        self._progress.zero_()
        self._worker_calls = 0

    def __getstate__(self) -> dict[str, Any]:
        # pickled for spawned workers when an iterator starts: hand them the current step
        self._sync()
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _watch(self)
