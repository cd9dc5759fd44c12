"""Frozen-feature extraction: one encoder forward per batch, every requested pooling at once.

The encoder is any ``nn.Module`` with ``encoder(x (B, C, H, W)) -> (B, N, D)`` patch tokens
after its final norm. Poolings:

- ``"avg"``: mean of the last layer's patch tokens, ``(N_images, D)`` float32.
- ``"avg4"``: the means of the last 4 layers' patch tokens concatenated (earliest layer first),
  ``(N_images, 4D)`` float32. Needs ``encoder.get_intermediate_layers(x, 4, norm=True)``.
- ``"grid"``: the last layer's patch tokens averaged over a 2 x 2 grid of image quadrants
  (adaptive average pooling of the token grid; on an odd grid the middle row and column count in
  both halves), concatenated in row-major quadrant order, ``(N_images, 4D)`` float32. Average
  pooling discards where things are; on small centred images the layout is much of what raw
  pixels keep, and this readout keeps a coarse version of it at the same size as ``"avg4"``.
- ``"flat"``: all of the last layer's patch tokens concatenated in grid order, ``(N_images,
  N*D)`` float32: the readout that keeps the whole layout (what raw pixels are, for pixels).
- ``"tokens"``: all patch tokens of the last layer, ``(N_images, N, D)`` in ``tokens_dtype``
  (float16 by default, to halve memory) for the attentive probe.

When ``"avg4"`` is requested the last-layer tokens are taken from the last element of
``get_intermediate_layers`` (by the encoder contract it equals ``encoder(x)``), so there is still
one forward per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ijepa.eval.checks import LABELS_KEY

logger = logging.getLogger(__name__)

#: The poolings ``extract_features`` knows.
POOLINGS = ("avg", "avg4", "grid", "flat", "tokens")
#: Side of the spatial grid of the ``"grid"`` pooling.
GRID_SIDE = 2
#: Number of layers concatenated by the ``"avg4"`` pooling.
AVG4_LAYERS = 4


def _check_poolings(poolings: Sequence[str], encoder: nn.Module) -> tuple[str, ...]:
    if isinstance(poolings, str):
        poolings = (poolings,)
    chosen = tuple(poolings)
    if not chosen:
        raise ValueError(f"poolings is empty; choose from {POOLINGS}")
    unknown = [p for p in chosen if p not in POOLINGS]
    if unknown:
        raise ValueError(f"unknown pooling(s) {unknown}; choose from {POOLINGS}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"poolings has duplicates: {chosen}")
    if "avg4" in chosen and not callable(getattr(encoder, "get_intermediate_layers", None)):
        raise ValueError(
            f"pooling 'avg4' needs encoder.get_intermediate_layers(x, n, norm=True), which "
            f"{type(encoder).__name__} does not have; use poolings=('avg',) with this encoder"
        )
    return chosen


def _check_tokens(out: object, what: str, batch: int) -> Tensor:
    if not isinstance(out, Tensor) or out.ndim != 3 or out.shape[0] != batch:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what} must return patch tokens (B={batch}, N, D), got {shape}")
    return out


def _forward_tokens(
    encoder: nn.Module, images: Tensor, need_layers: bool
) -> tuple[Tensor, list[Tensor]]:
    """Last-layer tokens (B, N, D) and, when asked, the last 4 layers' tokens (4 x (B, N, D))."""
    batch = images.shape[0]
    if need_layers:
        intermediate = getattr(encoder, "get_intermediate_layers", None)
        if not callable(intermediate):
            raise ValueError(f"{type(encoder).__name__} has no get_intermediate_layers method")
        layers = intermediate(images, AVG4_LAYERS, norm=True)
        if not isinstance(layers, list | tuple) or len(layers) != AVG4_LAYERS:
            raise ValueError(
                f"encoder.get_intermediate_layers(x, {AVG4_LAYERS}, norm=True) must return a "
                f"list of {AVG4_LAYERS} tensors, got {type(layers).__name__}"
            )
        checked = [_check_tokens(t, "encoder.get_intermediate_layers", batch) for t in layers]
        return checked[-1], checked
    return _check_tokens(encoder(images), "encoder(x)", batch), []


def grid_pool(tokens: Tensor, side: int = GRID_SIDE) -> Tensor:
    """Average ``(B, N, D)`` patch tokens over a ``side x side`` grid: ``(B, side*side*D)``.

    ``N`` must be a square number (a square patch grid).
    """
    b, n, d = tokens.shape
    h = round(n**0.5)
    if h * h != n:
        raise ValueError(f"grid pooling needs a square patch grid, got {n} tokens")
    grid = tokens.transpose(1, 2).reshape(b, d, h, h)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grid, side)  # (B, D, side, side)
    return pooled.permute(0, 2, 3, 1).reshape(b, side * side * d)


def extract_features(
    encoder: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    poolings: Sequence[str] = ("avg",),
    *,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    tokens_dtype: torch.dtype = torch.float16,
    progress: bool = True,
    total: int | None = None,
) -> dict[str, Tensor]:
    """Run a frozen encoder over labelled batches and pool its patch tokens.

    The encoder is put in eval mode for the pass (its previous mode is restored afterwards) and
    moved to ``device`` in place (``nn.Module.to``). Everything runs under
    ``torch.inference_mode``.

    Args:
        encoder: Module mapping images ``(B, C, H, W)`` to patch tokens ``(B, N, D)``.
        batches: Iterable of ``(images (B, C, H, W) float, labels (B,) int)``.
        poolings: Any of ``"avg"``, ``"avg4"``, ``"grid"``, ``"flat"``, ``"tokens"`` (see the
            module docstring).
        device: Device the forward runs on; results are returned on the CPU.
        bf16: Run the forward under bfloat16 autocast (pooled features are still float32).
        tokens_dtype: Storage dtype of the ``"tokens"`` entry (float16, bfloat16 or float32).
        progress: Show a tqdm progress bar.
        total: Number of batches, for the progress bar.

    Returns:
        ``{pooling: features}`` for each requested pooling plus ``"labels"`` int64 ``(N_images,)``.
        ``"avg"``: ``(N_images, D)``; ``"avg4"`` and ``"grid"``: ``(N_images, 4D)``; ``"flat"``:
        ``(N_images, N*D)``; ``"tokens"``:
        ``(N_images, N, D)``.
    """
    chosen = _check_poolings(poolings, encoder)
    if tokens_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"tokens_dtype must be float16, bfloat16 or float32, got {tokens_dtype}")
    device = torch.device(device)
    need_layers = "avg4" in chosen
    parts: dict[str, list[Tensor]] = {key: [] for key in (*chosen, LABELS_KEY)}
    was_training = encoder.training
    encoder.eval()
    encoder.to(device)
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for i, batch in enumerate(
                tqdm(batches, total=total, desc="features", disable=not progress)
            ):
                if not isinstance(batch, list | tuple) or len(batch) != 2:
                    raise ValueError(
                        f"batch {i} must be a pair (images, labels), got {type(batch).__name__}"
                    )
                images, labels = batch
                if not isinstance(images, Tensor) or images.ndim != 4:
                    shape = (
                        tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
                    )
                    raise ValueError(f"batch {i}: images must be (B, C, H, W), got {shape}")
                if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],):
                    shape = (
                        tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
                    )
                    raise ValueError(
                        f"batch {i}: labels must be ({images.shape[0]},) to match the images, got {shape}"
                    )
                images = images.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    last, layers = _forward_tokens(encoder, images, need_layers)
                if "avg" in chosen:
                    parts["avg"].append(last.float().mean(dim=1).cpu())
                if need_layers:
                    parts["avg4"].append(
                        torch.cat([t.float().mean(dim=1) for t in layers], dim=1).cpu()
                    )
                if "grid" in chosen:
                    parts["grid"].append(grid_pool(last.float()).cpu())
                if "flat" in chosen:
                    parts["flat"].append(last.float().flatten(1).cpu())
                if "tokens" in chosen:
                    tokens = last.to(tokens_dtype)
                    if not bool(torch.isfinite(tokens).all()):
                        raise ValueError(
                            f"batch {i}: patch tokens overflow {tokens_dtype} (or are NaN); "
                            "pass tokens_dtype=torch.bfloat16 or torch.float32"
                        )
                    parts["tokens"].append(tokens.cpu())
                parts[LABELS_KEY].append(labels.detach().long().cpu())
    finally:
        encoder.train(was_training)
    if not parts[LABELS_KEY]:
        raise ValueError("batches yielded nothing: cannot extract features from an empty dataset")
    feats = {key: torch.cat(chunks) for key, chunks in parts.items()}
    logger.info(
        "extracted %s for %d images in %.1f s",
        ", ".join(f"{k} {tuple(feats[k].shape[1:])}" for k in chosen),
        feats[LABELS_KEY].shape[0],
        time.perf_counter() - start,
    )
    return feats
