"""One I-JEPA training step: forward, backward, optimizer, EMA. No I/O, no host syncs.

The order matters and is the paper's:
1. the target encoder sees the whole image (no gradients); its output is layer-normed without
   affine parameters and the target-block tokens are gathered;
2. the context encoder sees only the context tokens; the predictor predicts every target block
   in one batched pass;
3. the loss (smooth-L1 or L2, plus an optional anti-collapse regulariser of the context
   embeddings, see :mod:`ijepa.train.regularizers`) is back-propagated through predictor and
   context encoder;
4. after the optimizer step the target encoder moves toward the context encoder by EMA.

Variants (an :class:`~ijepa.train.objective.Objective`, docs/variants.md) change step 1: pixel
targets, or targets from the context encoder itself with no EMA teacher (the target encoder then
becomes a copy of the context encoder in step 4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ijepa.models import JEPAModels, apply_masks
from ijepa.models.gather import split_padding
from ijepa.train.objective import Objective, expand_for_contexts
from ijepa.train.optim import set_lr_wd


@dataclass
class StepOutput:
    """Device tensors (never synchronised here): the loss and the collapse monitors.

    ``loss`` is what is back-propagated (prediction loss plus the weighted regulariser);
    ``reg`` is the unweighted regulariser (None without one). ``target_std`` is the std of the
    layer-normed target features over every image and position; ``target_img_std`` their std
    over the images at each position (zero when the targets depend on the position only).
    """

    loss: torch.Tensor
    target_std: torch.Tensor
    skipped: bool = False
    reg: torch.Tensor | None = None
    target_img_std: torch.Tensor | None = None


#: A regulariser of the context encoder's output ``(B, K, D)`` at a step (with padded masks, also
#: given the real tokens ``(B, K)``): a scalar tensor.
Regularizer = Callable[..., torch.Tensor]


def autocast_context(device_type: str, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA when enabled (no GradScaler is needed for bf16)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def compute_targets(
    target_encoder: nn.Module,
    images: torch.Tensor,
    masks_pred: torch.Tensor,
    nenc: int,
    layers: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layer-normed target-encoder features of the target blocks.

    Args:
        images: (B, C, H, W).
        masks_pred: (M, B, Kt) patch indices of the target blocks.
        nenc: number of context masks; targets are repeated to match the predictor's batch.
        layers: 1 (the paper): the last block's output after the final norm. ``K > 1``: the
            average of the last ``K`` blocks' outputs, each layer-normed without affine
            parameters (as data2vec builds its targets), so that the targets keep the lower
            blocks' more local information.

    Returns:
        targets (M * nenc * B, Kt, D) in (target block, context mask, image) order, the mean
        per-dimension std of the normalised target features over all images and positions, and
        the mean over positions and dimensions of their std over the images (collapse monitors:
        the second is zero for targets that say where a patch is but nothing of the image), all
        without gradients.
    """
    with torch.no_grad():
        if layers == 1:
            h = target_encoder(images)  # (B, N, D)
        else:
            intermediate = getattr(target_encoder, "get_intermediate_layers", None)
            if not callable(intermediate):
                raise ValueError(
                    f"targets from {layers} blocks need get_intermediate_layers, which "
                    f"{type(target_encoder).__name__} does not have"
                )
            blocks = intermediate(images, layers, norm=False)
            h = torch.stack([F.layer_norm(b, (b.size(-1),)) for b in blocks]).mean(dim=0)
        h = F.layer_norm(h, (h.size(-1),))  # no affine parameters, eps 1e-5
        std, img_std = token_stds(h.float())
        t = apply_masks(h, masks_pred)  # (M * B, Kt, D)
        if nenc > 1:
            m, b = masks_pred.shape[0], masks_pred.shape[1]
            t = t.view(m, 1, b, *t.shape[1:]).expand(m, nenc, b, *t.shape[1:])
            t = t.reshape(m * nenc * b, *t.shape[3:])
    return t, std, img_std


def token_stds(hf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean per-dimension std of ``hf (B, N, D)`` over all ``B * N`` tokens, and the mean over
    tokens and dimensions of the std over the ``B`` images (unbiased; zero when ``B == 1``).

    Both come from per-slot sums over the images (contiguous reductions, shifted by the first
    image): the variance over all tokens is the slots' within sum of squares plus ``B`` times the
    spread of the slot means. Two ``Tensor.std(dim=0)`` calls (the ``(B * N, D)`` view reduced
    across rows) cost ~1.3 % of a W-small bf16 step (``benchmarks/throughput.py --trace``).
    """
    b, n = hf.shape[0], hf.shape[1]
    # shifted by the first image: exact zeros for slots that are the same in every image
    d = hf - hf[:1]
    s1 = d.sum(dim=0)  # (N, D)
    within = (d.square().sum(dim=0) - s1 * s1 / b).clamp_min(0.0)  # squared deviations, summed
    slot_mean = hf[0] + s1 / b
    grand = slot_mean.mean(dim=0)  # (D,)
    between = (slot_mean - grand).square().sum(dim=0) * b  # (D,)
    std = ((within.sum(dim=0) + between) / max(b * n - 1, 1)).sqrt().mean()
    if b < 2:
        return std, torch.zeros_like(std)
    return std, (within / (b - 1)).sqrt().mean()


def feature_stds(
    h: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two collapse monitors of tokens ``h (B, N, D)`` after a LayerNorm without affine
    parameters: the mean per-dimension std over all tokens, and the mean over tokens and
    dimensions of the std over the images (see :func:`compute_targets`). ``valid (B, N)`` leaves
    padded tokens out (no host synchronisation either way)."""
    hf = F.layer_norm(h.detach().float(), (h.size(-1),))
    if valid is None:
        return token_stds(hf)
    w = valid.to(hf.dtype)[..., None]  # (B, N, 1)
    total = w.sum()
    mean = (hf * w).sum(dim=(0, 1)) / total.clamp_min(1.0)  # (D,)
    std = (((hf - mean) ** 2 * w).sum(dim=(0, 1)) / (total - 1).clamp_min(1.0)).sqrt().mean()
    n = w.sum(dim=0)  # (N, 1): images with a real token in each slot
    slot_mean = (hf * w).sum(dim=0) / n.clamp_min(1.0)
    slot_var = ((hf - slot_mean) ** 2 * w).sum(dim=0) / (n - 1).clamp_min(1.0)
    counted = (n > 1).to(hf.dtype)  # slots with a std over images
    img_std = (slot_var.sqrt() * counted).sum() / (counted.sum() * hf.shape[-1]).clamp_min(1.0)
    return std, img_std


def jepa_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kind: str = "smooth_l1",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over all elements of smooth-L1 (official code) or squared error (paper text).

    ``valid`` ``(R, Kt)`` (padded target masks) averages over the real target tokens only.
    """
    pred = pred.float()
    target = target.float()
    if kind not in ("smooth_l1", "l2"):
        raise ValueError(f"unknown loss '{kind}': expected 'smooth_l1' or 'l2'")
    fn = F.smooth_l1_loss if kind == "smooth_l1" else F.mse_loss
    if valid is None:
        return fn(pred, target)
    err = fn(pred, target, reduction="none")  # (R, Kt, D)
    w = valid.to(err.dtype)[..., None]
    return (err * w).sum() / (w.sum() * err.shape[-1]).clamp_min(1.0)


def forward_loss(
    models: JEPAModels,
    images: torch.Tensor,
    masks_enc: torch.Tensor,
    masks_pred: torch.Tensor,
    *,
    loss_kind: str = "smooth_l1",
    bf16: bool = False,
    regularizer: Regularizer | None = None,
    reg_weight: float = 0.0,
    step: int = 0,
    objective: Objective | None = None,
    target_layers: int = 1,
    valid_enc: torch.Tensor | None = None,
    valid_pred: torch.Tensor | None = None,
) -> StepOutput:
    """Forward pass and loss (with gradients through encoder and predictor).

    Args:
        images: (B, C, H, W) float.
        masks_enc: (nenc, B, Kc) context patch indices.
        masks_pred: (M, B, Kt) target patch indices.
        regularizer: optional anti-collapse term of the context embeddings ``(nenc*B, Kc, D)``,
            added with weight ``reg_weight``; ``step`` seeds its randomness.
        objective: the prediction target (None: the paper's, latent targets from the EMA
            encoder); see :class:`~ijepa.train.objective.Objective`.
        target_layers: blocks the targets average (see :func:`compute_targets`).
        valid_enc, valid_pred: real slots of padded masks (``mask.pad``: rows ending in -1);
            found from CPU-resident masks when not given. Padding is no attention key, and the
            loss and the regulariser average over real tokens only.
    """
    nenc, n_tgt, batch = masks_enc.shape[0], masks_pred.shape[0], masks_pred.shape[1]
    masks_enc, valid_enc = split_padding(masks_enc, valid_enc, "masks_enc")
    masks_pred, valid_pred = split_padding(masks_pred, valid_pred, "masks_pred")
    enc_kw = {} if valid_enc is None else {"valid": valid_enc}
    padded = valid_enc is not None or valid_pred is not None
    pred_kw = {"valid_x": valid_enc, "valid": valid_pred} if padded else {}
    device_type = images.device.type
    with autocast_context(device_type, bf16):
        std: torch.Tensor | None
        img_std: torch.Tensor | None
        if objective is None:
            targets, std, img_std = compute_targets(
                models.target_encoder, images, masks_pred, nenc=nenc, layers=target_layers
            )
        else:
            targets, std, img_std = objective.targets(
                models.encoder, models.target_encoder, images, masks_pred, nenc=nenc
            )
        z = models.encoder(images, masks_enc, **enc_kw)  # (nenc * B, Kc, D)
        pred = models.predictor(z, masks_enc, masks_pred, **pred_kw)  # (M*nenc*B, Kt, D or P)
    if std is None or img_std is None:  # pixel targets: the monitors read the context features
        with torch.no_grad():
            std, img_std = feature_stds(z, valid_enc)
    valid_t = None
    if valid_pred is not None:  # in the predictor's row order (block, context mask, image)
        valid_t = expand_for_contexts(valid_pred, n_tgt, batch, nenc)
    loss = jepa_loss(pred, targets, loss_kind, valid_t)
    if regularizer is None:
        return StepOutput(loss=loss, target_std=std, target_img_std=img_std)
    reg = regularizer(z, step) if valid_enc is None else regularizer(z, step, valid_enc)
    return StepOutput(
        loss=loss + reg_weight * reg, target_std=std, reg=reg.detach(), target_img_std=img_std
    )


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``t = m * t + (1 - m) * c`` over all parameters, as one foreach ``lerp``.

    ``t + (1 - m) * (c - t)`` is the same update in one pass over the weights instead of two
    (mul, then add): 12.9 vs 18.2 ms CPU time for ViT-S/16 on the 2-core dev CPU (1 thread).
    """
    t_params: list[torch.Tensor] = [p for p in target.parameters() if p.dtype.is_floating_point]
    o_params: list[torch.Tensor] = [p for p in online.parameters() if p.dtype.is_floating_point]
    if len(t_params) != len(o_params):
        raise ValueError("target and online encoders have different parameter lists")
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)


def train_step(
    models: JEPAModels,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks_enc: torch.Tensor,
    masks_pred: torch.Tensor,
    *,
    lr: float,
    wd: float,
    momentum: float,
    loss_kind: str = "smooth_l1",
    bf16: bool = False,
    skip_nonfinite: bool = False,
    regularizer: Regularizer | None = None,
    reg_weight: float = 0.0,
    step: int = 0,
    objective: Objective | None = None,
    target_layers: int = 1,
    valid_enc: torch.Tensor | None = None,
    valid_pred: torch.Tensor | None = None,
) -> StepOutput:
    """One full optimisation step. Returns device tensors; nothing is synchronised.

    Without an EMA teacher (``objective.teacher == "none"``) the target encoder becomes a copy of
    the updated context encoder (momentum 0), so it is always the trained encoder.

    With ``skip_nonfinite`` a non-finite loss is detected on the host (one sync per step) and the
    step is skipped: no backward, no update, no EMA; ``out.skipped`` is set.
    """
    set_lr_wd(optimizer, lr, wd)
    out = forward_loss(
        models,
        images,
        masks_enc,
        masks_pred,
        loss_kind=loss_kind,
        bf16=bf16,
        regularizer=regularizer,
        reg_weight=reg_weight,
        step=step,
        objective=objective,
        target_layers=target_layers,
        valid_enc=valid_enc,
        valid_pred=valid_pred,
    )
    if skip_nonfinite and not bool(torch.isfinite(out.loss)):
        # the only host sync in a step, and only under nan_policy=skip
        out.skipped = True
        return out
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    uses_ema = objective is None or objective.uses_ema
    ema_update(models.target_encoder, models.encoder, momentum if uses_ema else 0.0)
    out.loss = out.loss.detach()
    return out
