"""The Energy Transformer encoder (Hoover et al., "Energy Transformer", NeurIPS 2023).

Instead of a stack of blocks, one shared block defines a scalar energy of all tokens, and the
encoder runs ``steps`` steps of gradient descent on it. With ``g = norm(x)`` the token states
after the energy LayerNorm (a LayerNorm with a scalar gain ``gamma`` and a bias vector ``delta``,
the gradient of the Lagrangian ``L(x) = D * gamma * sqrt(var(x) + eps) + delta . x``)::

    E(g) = E_att(g) + E_hn(g)
    E_att = -(1/beta) sum_h sum_C log sum_B exp(beta * <Wq_h g_C, Wk_h g_B>),  beta = 1/sqrt(Y)
    E_hn  = -1/2 sum_C sum_mu relu(<xi_mu, g_C>)^2
    x <- x - step_size * dE/dg

``E_att`` is the energy attention (``H`` heads of query/key width ``Y``, no values: the update is
the gradient), ``E_hn`` a Hopfield network with ``M`` memories ``xi`` in place of the MLP. Since
``dg/dx`` is the Hessian of a convex Lagrangian (positive semi-definite), the continuous dynamics
never increase ``E``; the discrete steps do not either for a small enough ``step_size``
(:meth:`EnergyTransformer.energies` records ``E`` along the descent).

What we implemented, and where it differs from the paper:

* ``dE/dg`` is written out (``-A K Wq - A^T Q Wk`` for the attention, ``-relu(g xi^T) xi`` for
  the Hopfield network), not taken by autograd, so the encoder also runs under
  ``torch.inference_mode`` and training back-propagates through plain tensor operations (no
  double backward).
* The attention sum includes ``B = C`` (a token's own key), as the authors' JAX code does; the
  paper's formula excludes it.
* Tokens: I-JEPA's patch embedding and fixed sin-cos positions (no class or mask token), context
  masks select tokens before the descent, and the output is ``norm(x_T)``, so the module is a
  drop-in context or target encoder (``encoder(x, masks) -> (B, K, D)``). Padded masks (index -1)
  are supported: padded tokens are neither keys nor energy terms.
* ``get_intermediate_layers`` returns the states after the last ``n`` descent steps (the
  analogue of the last ``n`` blocks), for the ``avg4`` pooling.

Parameter names: ``patch_embed.proj``, ``pos_embed`` (as the ViT), ``norm.gamma``,
``norm.delta``, ``attn.wq``, ``attn.wk`` (``(H, Y, D)``), ``hopfield.xi`` (``(M, D)``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ijepa.models.gather import MaskArg, apply_masks, split_padding
from ijepa.models.layers import PatchEmbed, init_official_
from ijepa.models.pos_embed import get_2d_sincos_pos_embed, to_2tuple

__all__ = ["EnergyAttention", "EnergyLayerNorm", "EnergyTransformer", "HopfieldNetwork"]


def _weights(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``valid (B, N)`` as ``like``'s dtype, or None."""
    return None if valid is None else valid.to(like.dtype)


class EnergyLayerNorm(nn.Module):
    """LayerNorm with a scalar gain: ``g = gamma * (x - mean) / sqrt(var + eps) + delta``.

    Args:
        dim: token width ``D``.
        eps: variance epsilon.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(()))
        self.delta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., D) -> g (..., D)``."""
        centred = x - x.mean(-1, keepdim=True)
        scale = torch.rsqrt(centred.square().mean(-1, keepdim=True) + self.eps)
        return self.gamma * centred * scale + self.delta


class EnergyAttention(nn.Module):
    """Multi-head energy attention: queries and keys only, the update is the energy's gradient.

    Args:
        dim: token width ``D``.
        num_heads: heads ``H``.
        head_dim: query/key width ``Y`` of each head.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.beta = 1.0 / math.sqrt(head_dim)
        self.wq = nn.Parameter(torch.empty(num_heads, head_dim, dim))
        self.wk = nn.Parameter(torch.empty(num_heads, head_dim, dim))

    def _scores(self, g: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        q = torch.einsum("bnd,hyd->bhny", g, self.wq)  # (B, H, N, Y)
        k = torch.einsum("bnd,hyd->bhny", g, self.wk)  # (B, H, N, Y)
        s = self.beta * (q @ k.transpose(-2, -1))  # (B, H, Nq, Nk)
        if valid is not None:
            s = s.masked_fill(~valid[:, None, None, :], float("-inf"))  # padded keys
        return q, k, s

    def energy(self, g: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample energy ``(B,)`` of states ``g (B, N, D)`` (``valid (B, N)``: real tokens)."""
        _, _, s = self._scores(g, valid)
        lse = torch.logsumexp(s, dim=-1)  # (B, H, Nq)
        w = _weights(valid, lse)
        if w is not None:
            lse = lse * w[:, None, :]
        return -lse.sum(dim=(1, 2)) / self.beta

    def grad(self, g: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``dE/dg (B, N, D)``: ``-sum_h (A K) Wq_h + (A^T Q) Wk_h`` with ``A = softmax(S)``."""
        q, k, s = self._scores(g, valid)
        a = s.softmax(dim=-1)  # (B, H, Nq, Nk)
        w = _weights(valid, a)
        if w is not None:
            a = a * w[:, None, :, None]  # padded queries contribute no energy
        dq = a @ k  # (B, H, N, Y): -dE/dQ
        dk = a.transpose(-2, -1) @ q  # (B, H, N, Y): -dE/dK
        return -(
            torch.einsum("bhny,hyd->bnd", dq, self.wq) + torch.einsum("bhny,hyd->bnd", dk, self.wk)
        )


class HopfieldNetwork(nn.Module):
    """Hopfield network with ReLU-squared energy, the Energy Transformer's MLP.

    Args:
        dim: token width ``D``.
        num_memories: memories ``M``.
    """

    def __init__(self, dim: int, num_memories: int) -> None:
        super().__init__()
        self.xi = nn.Parameter(torch.empty(num_memories, dim))

    def energy(self, g: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample energy ``(B,)``: ``-1/2 sum relu(g xi^T)^2`` over real tokens."""
        e = F.relu(g @ self.xi.t()).square().sum(-1)  # (B, N)
        w = _weights(valid, e)
        if w is not None:
            e = e * w
        return -0.5 * e.sum(-1)

    def grad(self, g: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``dE/dg (B, N, D) = -relu(g xi^T) xi`` (zero for padded tokens)."""
        h = F.relu(g @ self.xi.t())  # (B, N, M)
        w = _weights(valid, h)
        if w is not None:
            h = h * w[..., None]
        return -(h @ self.xi)


class EnergyTransformer(nn.Module):
    """I-JEPA encoder whose body is one Energy Transformer block run for ``steps`` steps.

    Args:
        img_size: training image side (int) or ``(H, W)``.
        patch_size: patch side ``p``.
        in_chans: image channels ``C``.
        embed_dim: token width ``D`` (divisible by 4 for the sin-cos table).
        num_heads: attention heads ``H``.
        head_dim: query/key width ``Y`` per head; default ``D // H``.
        num_memories: Hopfield memories ``M``; default ``4 * D`` (the paper's ratio).
        steps: descent steps ``T`` (the paper uses 12).
        step_size: descent step ``alpha`` (the authors' code uses 0.1).
        norm_eps: epsilon of the energy LayerNorm.
        init_std: truncated-normal std of every weight (``Wq``, ``Wk``, ``xi``, patch conv).
        patch_init_std: std of the patch-embedding weights; ``None``: ``init_std``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        num_heads: int = 12,
        head_dim: int | None = None,
        num_memories: int | None = None,
        steps: int = 12,
        step_size: float = 0.1,
        norm_eps: float = 1e-5,
        init_std: float = 0.02,
        patch_init_std: float | None = None,
    ) -> None:
        super().__init__()
        if patch_size <= 0 or steps <= 0 or num_heads <= 0:
            raise ValueError(
                f"patch_size, steps and num_heads must be positive, got {patch_size}, {steps}, "
                f"{num_heads}"
            )
        if not (step_size > 0 and math.isfinite(step_size)):
            raise ValueError(f"step_size must be a positive number, got {step_size}")
        self.embed_dim = self.num_features = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        self.num_memories = num_memories or 4 * embed_dim
        self.steps = steps
        self.step_size = float(step_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.init_std = init_std
        self.img_size = to_2tuple(img_size, "img_size")
        self.grid_size = self._grid(self.img_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(
            torch.empty(1, self.num_patches, embed_dim), requires_grad=False
        )
        with torch.no_grad():
            self.pos_embed.copy_(get_2d_sincos_pos_embed(embed_dim, self.grid_size)[None])
        self.norm = EnergyLayerNorm(embed_dim, eps=norm_eps)
        self.attn = EnergyAttention(embed_dim, num_heads, self.head_dim)
        self.hopfield = HopfieldNetwork(embed_dim, self.num_memories)
        init_official_(self.patch_embed.proj, patch_init_std or init_std)
        with torch.no_grad():
            for p in (self.attn.wq, self.attn.wk, self.hopfield.xi):
                nn.init.trunc_normal_(p, std=init_std, a=-2.0, b=2.0)

    def _grid(self, size: tuple[int, int]) -> tuple[int, int]:
        if size[0] % self.patch_size or size[1] % self.patch_size:
            raise ValueError(f"img_size {size} is not divisible by patch_size {self.patch_size}")
        return size[0] // self.patch_size, size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches in the stored grid, ``Hp * Wp``."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def depth(self) -> int:
        """Descent steps (the analogue of a ViT's depth for layer-wise features)."""
        return self.steps

    def architecture(self) -> dict[str, object]:
        """The constructor arguments that fix the parameter shapes and the computation."""
        img = self.img_size
        return {
            "img_size": img[0] if img[0] == img[1] else img,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "num_memories": self.num_memories,
            "steps": self.steps,
            "step_size": self.step_size,
        }

    @torch.no_grad()
    def resize_pos_embed(self, img_size: int | tuple[int, int]) -> None:
        """Rebuild the stored sin-cos table for a new image size, in place."""
        self.img_size = to_2tuple(img_size, "img_size")
        self.grid_size = self._grid(self.img_size)
        table = get_2d_sincos_pos_embed(
            self.embed_dim, self.grid_size, dtype=self.pos_embed.dtype, device=self.pos_embed.device
        )
        self.pos_embed = nn.Parameter(table[None], requires_grad=False)

    def prepare_tokens(
        self, x: torch.Tensor, masks: MaskArg | None = None, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch tokens plus positions, the masked ones kept, and which of them are real.

        Args:
            x: images ``(B, C, H, W)``.
            masks: optional patch indices (``(B, K)``, ``(n, B, K)`` or a list); -1 pads a row.
            valid: real slots of padded masks (see :func:`~ijepa.models.gather.split_padding`).

        Returns:
            ``(tokens (n*B, K, D), valid (n*B, K) or None)``; ``valid`` is None without padding.
        """
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        pos: torch.Tensor = self.pos_embed
        if grid != self.grid_size:
            table = get_2d_sincos_pos_embed(
                self.embed_dim, grid, dtype=pos.dtype, device=pos.device
            )
            pos = table[None]
        tokens = self.patch_embed(x) + pos
        if masks is None:
            return tokens, None
        idx, valid = split_padding(masks, valid)
        return apply_masks(tokens, idx), valid

    def descend(
        self, x: torch.Tensor, valid: torch.Tensor | None = None, keep: int = 1
    ) -> list[torch.Tensor]:
        """Run the ``steps`` descent steps from tokens ``x (B, N, D)``.

        Returns:
            The states ``norm(x_t)`` after the last ``keep`` steps, earliest first.
        """
        states = []
        for t in range(self.steps):
            g = self.norm(x)
            x = x - self.step_size * (self.attn.grad(g, valid) + self.hopfield.grad(g, valid))
            if t >= self.steps - keep:
                states.append(self.norm(x))
        return states

    def forward(
        self, x: torch.Tensor, masks: MaskArg | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode images: ``(B, N, D)``, or ``(n * B, K, D)`` for the tokens named by ``masks``.

        Padded masks (-1) need ``valid`` when they live on an accelerator (see
        :func:`~ijepa.models.gather.split_padding`); padded slots come out as unused tokens.
        """
        tokens, valid = self.prepare_tokens(x, masks, valid)
        return self.descend(tokens, valid)[-1]

    def get_intermediate_layers(
        self, x: torch.Tensor, n: int = 4, norm: bool = True
    ) -> list[torch.Tensor]:
        """The states after the last ``n`` descent steps on the full image, earliest first.

        ``norm`` is accepted for the ViT interface; states are always taken after the energy
        LayerNorm (the state the energy is a function of).
        """
        del norm
        if not 1 <= n <= self.steps:
            raise ValueError(f"n must be in [1, {self.steps}], got {n}")
        tokens, _ = self.prepare_tokens(x)
        return self.descend(tokens, keep=n)

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Energy-attention probabilities at one descent step on the full image, for inspection.

        Args:
            x: images ``(B, C, H, W)``.
            layer: descent step (negative counts from the end), the analogue of a ViT block.

        Returns:
            ``(B, num_heads, N, N)``: ``softmax(beta Q K^T)`` of the states entering that step.
        """
        if not -self.steps <= layer < self.steps:
            raise ValueError(f"layer must be in [-{self.steps}, {self.steps}), got {layer}")
        tokens, _ = self.prepare_tokens(x)
        for _ in range(layer % self.steps):
            g = self.norm(tokens)
            tokens = tokens - self.step_size * (self.attn.grad(g) + self.hopfield.grad(g))
        _, _, scores = self.attn._scores(self.norm(tokens), None)
        return scores.softmax(dim=-1)

    def energy(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Energy ``(B,)`` of token states ``x (B, N, D)`` (before the norm)."""
        g = self.norm(x)
        return self.attn.energy(g, valid) + self.hopfield.energy(g, valid)

    @torch.no_grad()
    def energies(self, x: torch.Tensor, masks: MaskArg | None = None) -> torch.Tensor:
        """Energy along the descent on images ``x``: ``(steps + 1, B)``, the initial one first."""
        tokens, valid = self.prepare_tokens(x, masks)
        out = [self.energy(tokens, valid)]
        for _ in range(self.steps):
            g = self.norm(tokens)
            tokens = tokens - self.step_size * (
                self.attn.grad(g, valid) + self.hopfield.grad(g, valid)
            )
            out.append(self.energy(tokens, valid))
        return torch.stack(out)
