"""The I-JEPA Vision Transformer encoder (no class token) and its size table.

The encoder embeds patches with a strided convolution, adds a fixed 2-D sin-cos table
(``pos_embed``, frozen), optionally keeps only the tokens named by masks, runs pre-norm blocks and a
final LayerNorm. Parameter names equal the official checkpoints' (``patch_embed.proj``,
``pos_embed``, ``blocks.{i}.*``, ``norm``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ijepa.models.attention import Attention, AttnImpl, check_attn_impl
from ijepa.models.gather import MaskArg, apply_masks, split_padding
from ijepa.models.layers import Block, PatchEmbed, drop_path_rates, init_official_
from ijepa.models.pos_embed import get_2d_sincos_pos_embed, to_2tuple

__all__ = ["VIT_SIZES", "VisionTransformer", "vit_encoder"]

logger = logging.getLogger(__name__)

VIT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
    "giant": dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),
}


#: What :class:`VisionTransformer`'s ``input_norm`` accepts.
INPUT_NORMS = ("none", "image")


def standardize_images(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Each image minus its mean, over its standard deviation (all pixels and channels).

    Args:
        x: images ``(B, C, H, W)``, already normalised with the data set's statistics.
        eps: added to the standard deviation (a blank image stays finite).

    Returns:
        ``(B, C, H, W)`` float, zero mean and unit deviation per image.
    """
    std, mean = torch.std_mean(x.flatten(1).float(), dim=1)  # (B,), (B,)
    return (x - mean[:, None, None, None]) / (std[:, None, None, None] + eps)


class VisionTransformer(nn.Module):
    """ViT encoder without class token, as used for I-JEPA context and target encoders.

    Args:
        img_size: training image side (int) or ``(H, W)``; sets the stored ``pos_embed`` grid.
        patch_size: patch side ``p``.
        in_chans: image channels ``C``.
        embed_dim: token width ``D`` (divisible by 4 and by ``num_heads``).
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``D``.
        qkv_bias: bias on the ``qkv`` projections.
        norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the truncated-normal weight init.
        patch_init_std: standard deviation of the patch-embedding weight init; ``None``: ``init_std``
            (official). With small patches and few channels (fan-in ``C*p*p``) the official 0.02
            makes patch tokens tiny next to the sin-cos positions (RMS 0.14 vs 0.71 at 4x4x3),
            so a larger value restores the token scale the official ViT/16 has at 16x16x3.
        drop_path_rate: stochastic depth of the last block (linear from 0 over depth).
        attn_impl: ``"sdpa"``, ``"plain"`` or ``"auto"``.
        input_norm: ``"none"`` (official) or ``"image"``: standardise each image over all its
            pixels and channels before the patch embedding (:func:`standardize_images`), so the
            encoder never sees a picture's overall brightness and contrast. Not in the paper
            (docs/variants.md); formats without it (timm, transformers, official) refuse it.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        drop_path_rate: float = 0.0,
        attn_impl: AttnImpl = "auto",
        patch_init_std: float | None = None,
        input_norm: str = "none",
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        self.embed_dim = self.num_features = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.init_std = init_std
        self.input_norm = input_norm
        self.img_size, self.grid_size = self._grid_for(img_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        # Allocated on the default device (so ``with torch.device("meta")`` works), then filled.
        self.pos_embed = nn.Parameter(
            torch.empty(1, self.num_patches, embed_dim), requires_grad=False
        )
        with torch.no_grad():
            self.pos_embed.copy_(get_2d_sincos_pos_embed(embed_dim, self.grid_size)[None])
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
                drop_path=rate,
                attn_impl=check_attn_impl(attn_impl),
            )
            for rate in drop_path_rates(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.apply(lambda m: init_official_(m, init_std))
        if patch_init_std is not None:
            if patch_init_std <= 0:
                raise ValueError(f"patch_init_std must be positive, got {patch_init_std}")
            init_official_(self.patch_embed.proj, patch_init_std)
        # Tables for other input resolutions: {(grid, device, dtype): (1, N', D)}; not state.
        self._pos_cache: dict[tuple[tuple[int, int], torch.device, torch.dtype], torch.Tensor] = {}

    def _grid_for(self, img_size: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        size = to_2tuple(img_size, "img_size")
        if size[0] % self.patch_size or size[1] % self.patch_size:
            raise ValueError(f"img_size {size} is not divisible by patch_size {self.patch_size}")
        return size, (size[0] // self.patch_size, size[1] // self.patch_size)

    @property
    def num_patches(self) -> int:
        """Patches in the stored grid, ``Hp * Wp``."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def depth(self) -> int:
        """Number of blocks."""
        return len(self.blocks)

    def set_attn_impl(self, attn_impl: AttnImpl) -> None:
        """Switch the attention kernel of every block (``"sdpa"``, ``"plain"`` or ``"auto"``)."""
        impl = check_attn_impl(attn_impl)
        for module in self.modules():
            if isinstance(module, Attention):
                module.attn_impl = impl

    @torch.no_grad()
    def resize_pos_embed(self, img_size: int | tuple[int, int]) -> None:
        """Rebuild the stored sin-cos table for a new training resolution, in place.

        Afterwards ``img_size``, ``grid_size``, ``num_patches`` and ``pos_embed`` describe the new
        size. The table is a fixed function of the grid, so nothing learned is lost.
        """
        self.img_size, self.grid_size = self._grid_for(img_size)
        table = get_2d_sincos_pos_embed(
            self.embed_dim, self.grid_size, dtype=self.pos_embed.dtype, device=self.pos_embed.device
        )
        self.pos_embed = nn.Parameter(table.unsqueeze(0), requires_grad=False)
        self._pos_cache.clear()
        logger.debug("pos_embed resized to grid %s", self.grid_size)

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional table ``(1, Hg * Wg, D)`` for a patch grid ``(Hg, Wg)``.

        The stored ``pos_embed`` for the training grid, otherwise a sin-cos table for ``grid``
        (cached per grid, device and dtype outside ``torch.compile``).
        """
        if grid == self.grid_size:
            return self.pos_embed
        device, dtype = self.pos_embed.device, self.pos_embed.dtype
        if torch.compiler.is_compiling():
            return get_2d_sincos_pos_embed(self.embed_dim, grid, dtype=dtype, device=device)[None]
        key = (grid, device, dtype)
        table = self._pos_cache.get(key)
        if table is None:
            table = get_2d_sincos_pos_embed(self.embed_dim, grid, dtype=dtype, device=device)[None]
            self._pos_cache[key] = table
        return table

    def prepare_tokens(self, x: torch.Tensor, masks: MaskArg | None = None) -> torch.Tensor:
        """Patch-embed, add positions and keep the masked tokens.

        Args:
            x: images ``(B, C, H, W)``; ``H`` and ``W`` divisible by ``patch_size``.
            masks: optional patch indices, see :func:`~ijepa.models.gather.apply_masks`.

        Returns:
            ``(B, N, D)`` without masks, else ``(n * B, K, D)`` (mask-major).
        """
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        if self.input_norm == "image":
            x = standardize_images(x)
        tokens = self.patch_embed(x) + self.pos_embed_for(grid)
        if masks is not None:
            tokens = apply_masks(tokens, masks)
        return tokens

    def forward(
        self, x: torch.Tensor, masks: MaskArg | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode images, optionally only the tokens named by ``masks``.

        Args:
            x: images ``(B, C, H, W)``.
            masks: ``None``; ``(B, K)``; or ``(n, B, K)`` / a list of ``n`` ``(B, K)`` patch indices.
                Rows may end in -1 padding (``mask.pad``): padded tokens are no attention keys.
            valid: ``(n * B, K)`` real slots of padded masks; needed when padded masks already
                live on an accelerator (see :func:`~ijepa.models.gather.split_padding`).

        Returns:
            ``(B, N, D)``, ``(B, K, D)`` or ``(n * B, K, D)`` in mask-major order, after ``norm``
            (outputs at padded slots are meaningless).
        """
        key_valid = None
        if masks is not None:
            masks, key_valid = split_padding(masks, valid)
        tokens = self.prepare_tokens(x, masks)
        attn_mask = None
        if key_valid is not None:
            attn_mask = key_valid.to(tokens.device)[:, None, None, :]  # (n*B, 1, 1, K)
        for block in self.blocks:
            tokens = block(tokens) if attn_mask is None else block(tokens, attn_mask=attn_mask)
        return self.norm(tokens)

    def get_intermediate_layers(
        self, x: torch.Tensor, n: int = 4, norm: bool = True
    ) -> list[torch.Tensor]:
        """Outputs of the last ``n`` blocks on the full image.

        Args:
            x: images ``(B, C, H, W)``.
            n: how many of the last blocks to return (``1 <= n <= depth``).
            norm: pass each output through the final ``norm``.

        Returns:
            List of ``n`` tensors ``(B, N, D)``, shallowest first (the last is the final block).
        """
        if not 1 <= n <= self.depth:
            raise ValueError(f"n must be in [1, {self.depth}], got {n}")
        tokens = self.prepare_tokens(x)
        outputs = []
        first = self.depth - n
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i >= first:
                outputs.append(self.norm(tokens) if norm else tokens)
        return outputs

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Attention probabilities of one block on the full image, for inspection.

        Args:
            x: images ``(B, C, H, W)``.
            layer: block index (negative counts from the end).

        Returns:
            ``(B, num_heads, N, N)``.
        """
        if not -self.depth <= layer < self.depth:
            raise ValueError(f"layer must be in [-{self.depth}, {self.depth}), got {layer}")
        index = layer % self.depth
        tokens = self.prepare_tokens(x)
        for block in self.blocks[:index]:
            tokens = block(tokens)
        target = self.blocks[index]
        assert isinstance(target, Block)
        return target.attn.attention_weights(target.norm1(tokens))


def vit_encoder(size: str, **kwargs: Any) -> VisionTransformer:
    """Build an encoder of a named size; ``kwargs`` override the size's defaults.

    Args:
        size: ``tiny``, ``small``, ``base``, ``large``, ``huge``, ``giant`` (or ``vit_<size>``).
        **kwargs: any :class:`VisionTransformer` argument (``patch_size``, ``img_size``, ...).

    Returns:
        A freshly initialised :class:`VisionTransformer`.
    """
    key = size.lower().removeprefix("vit_")
    if key not in VIT_SIZES:
        choices = ", ".join(list(VIT_SIZES) + [f"vit_{name}" for name in VIT_SIZES])
        raise ValueError(f"unknown ViT size {size!r}; choose one of: {choices}")
    return VisionTransformer(**{**VIT_SIZES[key], **kwargs})
