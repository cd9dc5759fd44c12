"""The I-JEPA predictor: a narrow ViT that predicts target-block representations from context.

Context tokens are projected ``D -> Dp`` (``predictor_embed``) and given the predictor's own fixed
sin-cos positions; one learned ``mask_token`` plus position is appended per target patch; after the
blocks and ``predictor_norm``, the target tokens are projected back ``Dp -> D``
(``predictor_proj``). Every (target mask, context mask) pair is one sample, in the batch order of
the official code: (target block i, context mask j, image b).
"""

from __future__ import annotations

import torch
from torch import nn

from ijepa.models.attention import Attention, AttnImpl, check_attn_impl
from ijepa.models.gather import MaskArg, stack_masks
from ijepa.models.layers import Block, drop_path_rates, init_official_
from ijepa.models.pos_embed import get_2d_sincos_pos_embed, to_2tuple

__all__ = ["VisionTransformerPredictor"]


class VisionTransformerPredictor(nn.Module):
    """I-JEPA predictor.

    Args:
        grid_size: patch grid ``Hp`` or ``(Hp, Wp)`` of the encoder.
        embed_dim: encoder width ``D`` (input and output width).
        predictor_embed_dim: internal width ``Dp`` (divisible by 4 and by ``num_heads``).
        depth: number of blocks.
        num_heads: attention heads (the encoder's, in I-JEPA).
        mlp_ratio: MLP hidden width over ``Dp``.
        qkv_bias: bias on the ``qkv`` projections.
        norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the truncated-normal init (weights and ``mask_token``).
        drop_path_rate: stochastic depth of the last block (linear from 0 over depth).
        attn_impl: ``"sdpa"``, ``"plain"`` or ``"auto"``.
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int] = 14,
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        drop_path_rate: float = 0.0,
        attn_impl: AttnImpl = "auto",
    ) -> None:
        super().__init__()
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        self.grid_size = to_2tuple(grid_size, "grid_size")
        self.embed_dim = embed_dim
        self.predictor_embed_dim = predictor_embed_dim
        self.num_heads = num_heads
        self.init_std = init_std
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        self.predictor_pos_embed = nn.Parameter(
            torch.empty(1, num_patches, predictor_embed_dim), requires_grad=False
        )
        with torch.no_grad():
            table = get_2d_sincos_pos_embed(predictor_embed_dim, self.grid_size)
            self.predictor_pos_embed.copy_(table[None])
        self.predictor_blocks = nn.ModuleList(
            Block(
                predictor_embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
                drop_path=rate,
                attn_impl=check_attn_impl(attn_impl),
            )
            for rate in drop_path_rates(drop_path_rate, depth)
        )
        self.predictor_norm = nn.LayerNorm(predictor_embed_dim, eps=norm_eps)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim)
        self.apply(lambda m: init_official_(m, init_std))
        nn.init.trunc_normal_(self.mask_token, std=init_std, a=-2.0, b=2.0)

    @property
    def num_patches(self) -> int:
        """Patches in the grid, ``Hp * Wp``."""
        return self.grid_size[0] * self.grid_size[1]

    def set_attn_impl(self, attn_impl: AttnImpl) -> None:
        """Switch the attention kernel of every block (``"sdpa"``, ``"plain"`` or ``"auto"``)."""
        impl = check_attn_impl(attn_impl)
        for module in self.modules():
            if isinstance(module, Attention):
                module.attn_impl = impl

    def forward(self, z: torch.Tensor, masks_x: MaskArg, masks: MaskArg) -> torch.Tensor:
        """Predict the encoder's representations at the target patches.

        Args:
            z: context-encoder output ``(nenc * B, Kc, D)`` (mask-major, as the encoder returns it).
            masks_x: context patch indices ``(nenc, B, Kc)``, ``(B, Kc)`` or a list of ``(B, Kc)``.
            masks: target patch indices ``(M, B, Kt)``, ``(B, Kt)`` or a list of ``(B, Kt)``.

        Returns:
            ``(M * nenc * B, Kt, D)``; row ``(i * nenc + j) * B + b`` predicts target block ``i``
            of image ``b`` from context mask ``j``.
        """
        ctx = stack_masks(masks_x, "masks_x").to(
            device=z.device, dtype=torch.long, non_blocking=True
        )
        tgt = stack_masks(masks, "masks").to(device=z.device, dtype=torch.long, non_blocking=True)
        nenc, batch, k_ctx = ctx.shape
        n_tgt, batch_t, k_tgt = tgt.shape
        if batch_t != batch:
            raise ValueError(f"masks_x cover {batch} images per mask but masks cover {batch_t}")
        if z.ndim != 3 or z.shape[0] != nenc * batch or z.shape[1] != k_ctx:
            raise ValueError(
                f"z must be (nenc*B, Kc, D) = ({nenc * batch}, {k_ctx}, D) for masks_x of shape "
                f"{tuple(ctx.shape)}, got {tuple(z.shape)}"
            )
        pos = self.predictor_pos_embed[0]  # (N, Dp)
        dp = pos.shape[-1]

        # Context tokens at their positions: (nenc*B, Kc, Dp).
        x = self.predictor_embed(z) + pos.index_select(0, ctx.reshape(-1)).view(-1, k_ctx, dp)

        # One mask token per target patch, shared by all context masks: (M, nenc*B, Kt, Dp).
        tgt_pos = pos.index_select(0, tgt.reshape(-1)).view(n_tgt, 1, batch, k_tgt, dp)
        pred_tokens = (self.mask_token + tgt_pos).expand(n_tgt, nenc, batch, k_tgt, dp)

        # Context repeated once per target block, mask tokens appended: (M*nenc*B, Kc+Kt, Dp).
        x = x.view(1, nenc, batch, k_ctx, dp).expand(n_tgt, -1, -1, -1, -1)
        x = torch.cat([x, pred_tokens], dim=3).flatten(0, 2)
        last = len(self.predictor_blocks) - 1
        for i, block in enumerate(self.predictor_blocks):
            # Only the target tokens' outputs are used, so the last block computes only those
            # (the context tokens remain its keys and values): same result, less work.
            x = block(x, keep_from=k_ctx) if i == last else block(x)
        return self.predictor_proj(self.predictor_norm(x))  # (M*nenc*B, Kt, D)
