"""What the predictor predicts: decode its outputs for masked target blocks back to pixels.

I-JEPA predicts representations, not pixels, and the paper's decoder was never released. Here a
small decoder is trained from the (layer-normed, like the training targets) target-encoder patch
features to the pixels of the same patch. It then decodes the *predictor's* outputs at the target
blocks, shown inside the boxes next to the truth and next to the decoder's reconstruction of the
true target features (the best the decoder can do).

The decoder is a per-patch MLP on purpose: a decoder with spatial mixing (convolutions) would see
the neighbouring *true* target features, which come from a target encoder that saw the whole
image, including the masked blocks, and could reconstruct the blocks from them. Per patch, a
decoded target patch depends only on the predictor's output for that patch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ijepa.viz.common import encoder_patch_size, new_figure, patch_grid, save_figure, to_display
from ijepa.viz.masks import TARGET_COLOURS, block_box

__all__ = [
    "DecoderFit",
    "PatchDecoder",
    "PredictorPictures",
    "decode_predictions",
    "patchify",
    "save_predictor_figure",
    "target_tokens",
    "train_decoder",
    "unpatchify",
]

logger = logging.getLogger(__name__)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, C * p * p)`` in row-major patch order."""
    b, c, _, _ = images.shape
    hp, wp = patch_grid(images, patch_size)
    p = patch_size
    x = images.reshape(b, c, hp, p, wp, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, hp * wp, c * p * p)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, C * p * p)`` -> ``(B, C, Hp * p, Wp * p)``."""
    b, n, cpp = patches.shape
    hp, wp = grid
    p = patch_size
    c = cpp // (p * p)
    if n != hp * wp or c * p * p != cpp:
        raise ValueError(f"patches {tuple(patches.shape)} do not fit grid {grid} with patch {p}")
    x = patches.reshape(b, hp, wp, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, hp * p, wp * p)


class PatchDecoder(nn.Module):
    """Per-patch MLP from an encoder feature ``(..., D)`` to the patch's pixels ``(..., C*p*p)``.

    Args:
        embed_dim: feature width ``D``.
        patch_size: patch side ``p``.
        in_chans: image channels ``C``.
        hidden: hidden width of the two hidden layers.
    """

    def __init__(self, embed_dim: int, patch_size: int, in_chans: int, hidden: int = 256) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.net = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, in_chans * patch_size * patch_size),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decode features ``(..., D)`` to pixels ``(..., C * p * p)`` (normalised units)."""
        return self.net(tokens)


@torch.no_grad()
def target_tokens(
    target_encoder: nn.Module, images: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Layer-normed (no affine, as the training targets) target features ``(B, N, D)``, CPU."""
    was_training = target_encoder.training
    target_encoder.eval()
    try:
        out = []
        for chunk in images.split(batch_size):
            h = target_encoder(chunk).float()
            out.append(F.layer_norm(h, (h.shape[-1],)).cpu())
    finally:
        target_encoder.train(was_training)
    return torch.cat(out)


@dataclass
class DecoderFit:
    """A trained :class:`PatchDecoder` and how well it fits.

    Attributes:
        decoder: the decoder (eval mode).
        losses: training loss (pixel MSE, normalised units) every 10 steps.
        train_mse: final MSE on all training patches.
        pixel_var: variance of the training pixels (the MSE of predicting their mean).
    """

    decoder: PatchDecoder
    losses: list[float] = field(default_factory=list)
    train_mse: float = math.nan
    pixel_var: float = math.nan


def train_decoder(
    target_encoder: nn.Module,
    images: torch.Tensor,
    *,
    steps: int = 300,
    batch_tokens: int = 1024,
    lr: float = 2e-3,
    hidden: int = 256,
    seed: int = 0,
) -> DecoderFit:
    """Fit a :class:`PatchDecoder` from target features to pixels on ``images``.

    Features are computed once (the encoder is frozen); each step fits a random batch of
    ``batch_tokens`` patches with AdamW and a cosine learning-rate decay.

    Args:
        target_encoder: frozen ViT with ``patch_size`` and ``embed_dim``.
        images: ``(B, C, H, W)`` normalised training images.
        steps: optimisation steps.
        batch_tokens: patches per step.
        lr: peak learning rate.
        hidden: decoder hidden width.
        seed: seed of the decoder init and of the batches.

    Returns:
        The :class:`DecoderFit`.
    """
    if steps < 1 or batch_tokens < 1:
        raise ValueError(f"steps and batch_tokens must be >= 1, got {steps}, {batch_tokens}")
    p = encoder_patch_size(target_encoder)
    feats = target_tokens(target_encoder, images).flatten(0, 1)  # (B*N, D)
    pixels = patchify(images.float().cpu(), p).flatten(0, 1)  # (B*N, C*p*p)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = PatchDecoder(feats.shape[1], p, int(images.shape[1]), hidden)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    fit = DecoderFit(decoder=decoder, pixel_var=float(pixels.var()))
    decoder.train()
    for step in range(steps):
        idx = torch.randint(0, feats.shape[0], (min(batch_tokens, feats.shape[0]),), generator=gen)
        loss = F.mse_loss(decoder(feats[idx]), pixels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            fit.losses.append(float(loss.detach()))
    decoder.eval()
    with torch.no_grad():
        fit.train_mse = float(
            sum(
                F.mse_loss(decoder(f), x, reduction="sum")
                for f, x in zip(feats.split(8192), pixels.split(8192), strict=True)
            )
            / pixels.numel()
        )
    logger.info(
        "decoder: %d steps, train MSE %.4f (pixel variance %.4f)",
        steps,
        fit.train_mse,
        fit.pixel_var,
    )
    return fit


@dataclass
class PredictorPictures:
    """Decoded predictions for a batch of images.

    Attributes:
        images: ``(B, C, H, W)`` the normalised input images.
        context: ``(B, N)`` bool, patches the context encoder saw.
        targets: ``(M, B, Kt)`` target patch indices.
        predicted: ``(B, C, H, W)`` the image with target patches replaced by the decoded
            predictor outputs (averaged where blocks overlap).
        reconstructed: same with the decoded *true* target features.
        mse_predicted: pixel MSE (normalised units) of the decoded predictions on target patches.
        mse_reconstructed: pixel MSE of the decoded true features on target patches.
        mse_mean: pixel MSE of predicting 0 (the data mean) on target patches.
    """

    images: torch.Tensor
    context: torch.Tensor
    targets: torch.Tensor
    predicted: torch.Tensor
    reconstructed: torch.Tensor
    mse_predicted: float
    mse_reconstructed: float
    mse_mean: float


def _paste(
    pixels: torch.Tensor, decoded: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average decoded target patches ``(M, B, Kt, P)`` into ``pixels (B, N, P)``.

    Returns the pasted patches and the ``(B, N)`` bool map of target patches.
    """
    m, b, kt, pp = decoded.shape
    n = pixels.shape[1]
    sums = torch.zeros(b, n, pp)
    counts = torch.zeros(b, n, 1)
    idx = targets.permute(1, 0, 2).reshape(b, m * kt)  # (B, M*Kt)
    vals = decoded.permute(1, 0, 2, 3).reshape(b, m * kt, pp)
    sums.scatter_add_(1, idx[..., None].expand(-1, -1, pp), vals)
    counts.scatter_add_(1, idx[..., None], torch.ones(b, m * kt, 1))
    is_target = counts[..., 0] > 0
    out = torch.where(is_target[..., None], sums / counts.clamp_min(1), pixels)
    return out, is_target


@torch.no_grad()
def decode_predictions(
    encoder: nn.Module,
    predictor: nn.Module,
    target_encoder: nn.Module,
    decoder: PatchDecoder,
    images: torch.Tensor,
    masks_enc: torch.Tensor,
    masks_pred: torch.Tensor,
) -> PredictorPictures:
    """Run context encoder and predictor on masked images and decode predictions and truths.

    Args:
        encoder: the context encoder.
        predictor: the I-JEPA predictor.
        target_encoder: the target encoder (for the true target features).
        decoder: a decoder trained by :func:`train_decoder` on ``target_encoder``.
        images: ``(B, C, H, W)`` normalised images.
        masks_enc: ``(nenc, B, Kc)`` context indices (the first context mask is used).
        masks_pred: ``(M, B, Kt)`` target indices.

    Returns:
        The :class:`PredictorPictures`.
    """
    modules = (encoder, predictor, target_encoder)
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        ctx = masks_enc[:1]
        z = encoder(images, ctx)  # (B, Kc, D)
        pred = predictor(z, ctx, masks_pred).float().cpu()  # (M*B, Kt, D)
        true = target_tokens(target_encoder, images)  # (B, N, D)
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    m_blocks, b, kt = masks_pred.shape
    p = decoder.patch_size
    grid = patch_grid(images, p)
    pixels = patchify(images.float().cpu(), p)  # (B, N, P)
    tgt = masks_pred.cpu().long()
    dec_pred = decoder(pred).view(m_blocks, b, kt, -1)
    true_at = torch.stack([true[torch.arange(b)[:, None], tgt[i]] for i in range(m_blocks)])
    dec_true = decoder(true_at)  # (M, B, Kt, P)
    predicted, is_target = _paste(pixels, dec_pred, tgt)
    reconstructed, _ = _paste(pixels, dec_true, tgt)
    sel = is_target[..., None].expand_as(pixels)
    context = torch.zeros(b, pixels.shape[1], dtype=torch.bool)
    context.scatter_(1, ctx[0].cpu().long(), True)
    return PredictorPictures(
        images=images.cpu(),
        context=context,
        targets=tgt,
        predicted=unpatchify(predicted, grid, p),
        reconstructed=unpatchify(reconstructed, grid, p),
        mse_predicted=float(((predicted - pixels)[sel] ** 2).mean()),
        mse_reconstructed=float(((reconstructed - pixels)[sel] ** 2).mean()),
        mse_mean=float((pixels[sel] ** 2).mean()),
    )


def save_predictor_figure(
    pics: PredictorPictures,
    path: str | Path,
    *,
    patch_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    max_images: int = 6,
) -> Path:
    """One row per image: truth with target boxes, the context the encoder saw, the decoded
    predictor outputs inside the boxes, and the decoded true target features inside the boxes.

    Args:
        pics: from :func:`decode_predictions`.
        path: output PNG.
        patch_size: patch side in pixels.
        mean: normalisation mean of the images.
        std: normalisation std of the images.
        max_images: rows drawn at most.

    Returns:
        ``path``.
    """
    from matplotlib.patches import Rectangle

    n = min(max_images, pics.images.shape[0])
    truth = to_display(pics.images[:n], mean, std)
    pred = to_display(pics.predicted[:n], mean, std)
    recon = to_display(pics.reconstructed[:n], mean, std)
    grid = patch_grid(pics.images, patch_size)
    ctx_px = (
        pics.context[:n]
        .view(n, *grid)
        .repeat_interleave(patch_size, 1)
        .repeat_interleave(patch_size, 2)[..., None]
        .numpy()
    )
    context_only = truth * ctx_px + (0.25 * truth + 0.35) * (1 - ctx_px)
    titles = (
        "image + target blocks",
        "context seen",
        "predictor, decoded",
        "true features, decoded",
    )
    fig = new_figure(8.0, 2.1 * n + 0.5)
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        for j, picture in enumerate((truth[i], context_only[i], pred[i], recon[i])):
            ax = axes[i, j]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
            if j == 1:
                continue
            for k in range(pics.targets.shape[0]):
                r0, c0, nr, nc = block_box(pics.targets[k, i], grid[1])
                ax.add_patch(
                    Rectangle(
                        (c0 * patch_size - 0.5, r0 * patch_size - 0.5),
                        nc * patch_size,
                        nr * patch_size,
                        fill=False,
                        edgecolor=TARGET_COLOURS[k % len(TARGET_COLOURS)],
                        linewidth=1.5,
                    )
                )
    fig.suptitle(
        f"target-patch pixel MSE: predictor {pics.mse_predicted:.3f}, true features "
        f"{pics.mse_reconstructed:.3f}, mean image {pics.mse_mean:.3f}",
        fontsize=9,
    )
    save_figure(fig, path)
    logger.info("wrote predictor figure %s", path)
    return Path(path)
