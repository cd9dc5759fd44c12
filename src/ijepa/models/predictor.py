"""The I-JEPA predictor: a narrow ViT that predicts target-block representations from context.

Context tokens are projected ``D -> Dp`` (``predictor_embed``) and given the predictor's own fixed
sin-cos positions; one learned ``mask_token`` plus position is appended per target patch; after the
blocks and ``predictor_norm``, the target tokens are projected back ``Dp -> D``
(``predictor_proj``). Every (target mask, context mask) pair is one sample, in the batch order of
the official code: (target block i, context mask j, image b).

With ``shared_context=True`` the predictor makes one pass for all target blocks instead: the
sequence holds the context tokens once and the M blocks' mask tokens after them; context tokens
attend to the context only, and the tokens of block i to the context and to block i
(:class:`~ijepa.models.attention.SharedContext`). This is not the official computation (there,
context tokens also attend to the mask tokens of the one block they are paired with), but it
computes the context tokens once instead of M times; the output has the same shape and order.
"""

from __future__ import annotations

import torch
from torch import nn

from ijepa.models.attention import Attention, AttnImpl, SharedContext, check_attn_impl
from ijepa.models.gather import MaskArg, split_padding
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
        shared_context: one pass for all target blocks (see the module docstring); a computation
            choice, not an architecture one: the parameters are the same, and the attribute may
            be switched at any time.
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
        shared_context: bool = False,
    ) -> None:
        super().__init__()
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        self.grid_size = to_2tuple(grid_size, "grid_size")
        self.embed_dim = embed_dim
        self.predictor_embed_dim = predictor_embed_dim
        self.num_heads = num_heads
        self.init_std = init_std
        self.shared_context = shared_context
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

    def forward(
        self,
        z: torch.Tensor,
        masks_x: MaskArg,
        masks: MaskArg,
        valid_x: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the encoder's representations at the target patches.

        Args:
            z: context-encoder output ``(nenc * B, Kc, D)`` (mask-major, as the encoder returns it).
            masks_x: context patch indices ``(nenc, B, Kc)``, ``(B, Kc)`` or a list of ``(B, Kc)``.
            masks: target patch indices ``(M, B, Kt)``, ``(B, Kt)`` or a list of ``(B, Kt)``.
            valid_x, valid: real slots of padded ``masks_x`` / ``masks`` (rows ending in -1,
                ``mask.pad``), needed when padded masks already live on an accelerator (see
                :func:`~ijepa.models.gather.split_padding`). Padding is no attention key; outputs
                at padded target slots are meaningless. Not with ``shared_context``.

        Returns:
            ``(M * nenc * B, Kt, D)``; row ``(i * nenc + j) * B + b`` predicts target block ``i``
            of image ``b`` from context mask ``j``.
        """
        ctx, ctx_valid = split_padding(masks_x, valid_x, "masks_x")
        tgt, tgt_valid = split_padding(masks, valid, "masks")
        ctx = ctx.to(device=z.device, dtype=torch.long, non_blocking=True)
        tgt = tgt.to(device=z.device, dtype=torch.long, non_blocking=True)
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

        padded = ctx_valid is not None or tgt_valid is not None
        if self.shared_context:
            if padded:
                raise ValueError("padded masks are not supported with shared_context=True")
            return self._forward_shared(x, tgt, nenc)

        # One mask token per target patch, shared by all context masks: (M, nenc*B, Kt, Dp).
        tgt_pos = pos.index_select(0, tgt.reshape(-1)).view(n_tgt, 1, batch, k_tgt, dp)
        pred_tokens = (self.mask_token + tgt_pos).expand(n_tgt, nenc, batch, k_tgt, dp)

        # Context repeated once per target block, mask tokens appended: (M*nenc*B, Kc+Kt, Dp).
        x = x.view(1, nenc, batch, k_ctx, dp).expand(n_tgt, -1, -1, -1, -1)
        x = torch.cat([x, pred_tokens], dim=3).flatten(0, 2)
        attn_mask = None
        if padded:  # padded masks: keys of each row are its real context and target tokens
            sizes = (n_tgt, nenc, batch, k_ctx, k_tgt)
            attn_mask = self._key_mask(ctx_valid, tgt_valid, sizes).to(x.device)
        last = len(self.predictor_blocks) - 1
        for i, block in enumerate(self.predictor_blocks):
            # Only the target tokens' outputs are used, so the last block computes only those
            # (the context tokens remain its keys and values): same result, less work.
            keep = k_ctx if i == last else 0
            x = block(x, keep) if attn_mask is None else block(x, keep, attn_mask=attn_mask)
        return self.predictor_proj(self.predictor_norm(x))  # (M*nenc*B, Kt, D)

    @staticmethod
    def _key_mask(
        ctx_valid: torch.Tensor | None,
        tgt_valid: torch.Tensor | None,
        sizes: tuple[int, int, int, int, int],
    ) -> torch.Tensor:
        """``(M*nenc*B, 1, 1, Kc+Kt)`` attention mask of the real keys of every predictor row."""
        n_tgt, nenc, batch, k_ctx, k_tgt = sizes
        ref = ctx_valid if ctx_valid is not None else tgt_valid
        assert ref is not None
        cv = ctx_valid if ctx_valid is not None else ref.new_ones(nenc * batch, k_ctx)
        tv = tgt_valid if tgt_valid is not None else ref.new_ones(n_tgt * batch, k_tgt)
        cv = cv.view(1, nenc, batch, k_ctx).expand(n_tgt, -1, -1, -1)
        tv = tv.view(n_tgt, 1, batch, k_tgt).expand(-1, nenc, -1, -1)
        return torch.cat([cv, tv], dim=3).flatten(0, 2)[:, None, None, :]

    def _forward_shared(self, x: torch.Tensor, tgt: torch.Tensor, nenc: int) -> torch.Tensor:
        """One pass for all target blocks.

        Args:
            x: embedded context tokens ``(nenc * B, Kc, Dp)``.
            tgt: target patch indices ``(M, B, Kt)``.
            nenc: context masks per image.

        Returns:
            ``(M * nenc * B, Kt, D)`` in the order of :meth:`forward`.
        """
        n_tgt, batch, k_tgt = tgt.shape
        k_ctx, dp = x.shape[1], x.shape[2]
        pos = self.predictor_pos_embed[0]  # (N, Dp)
        # The M blocks' mask tokens side by side, per image: (B, M*Kt, Dp), then per context mask.
        tokens = self.mask_token + pos.index_select(0, tgt.reshape(-1)).view(
            n_tgt, batch, k_tgt, dp
        )
        tokens = tokens.transpose(0, 1).reshape(1, batch, n_tgt * k_tgt, dp)
        tokens = tokens.expand(nenc, -1, -1, -1).flatten(0, 1)  # (nenc*B, M*Kt, Dp)
        x = torch.cat([x, tokens], dim=1)  # (nenc*B, Kc + M*Kt, Dp)
        layout = SharedContext(n_context=k_ctx, n_groups=n_tgt)
        last = len(self.predictor_blocks) - 1
        for i, block in enumerate(self.predictor_blocks):
            # the last block computes only the mask tokens (the context stays keys and values)
            x = block(x, keep_from=k_ctx if i == last else 0, shared_context=layout)
        out = self.predictor_proj(self.predictor_norm(x))  # (nenc*B, M*Kt, D)
        out = out.view(nenc, batch, n_tgt, k_tgt, -1).permute(2, 0, 1, 3, 4)
        return out.reshape(n_tgt * nenc * batch, k_tgt, -1)  # (M*nenc*B, Kt, D)
