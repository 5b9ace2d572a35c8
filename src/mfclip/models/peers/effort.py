"""Effort (Yan et al., "Orthogonal Subspace Decomposition for Generalizable AI-Generated Image Detection",
ICML 2025, arXiv 2411.15633): tuning a CLIP ViT in the residual subspace of its attention weights.

Each targeted weight W (the query, key, value and output projections of every attention layer, each
width × width) is split by SVD, W = U Σ Vᵀ, into the principal part W_r = U_r Σ_r V_rᵀ of its r = n − k
largest singular values, which stays frozen, and the residual U_k Σ_k V_kᵀ of the k smallest ones, whose
factors (Û, σ̂, V̂) are trained: Ŵ = W_r + Û diag(σ̂) V̂ᵀ. Everything else of the tower is frozen; a linear
head reads the CLS feature before the projection (``ln_post`` of the class token). Two constraints join
the cross-entropy (averaged over the split matrices):

- orthogonality: ‖[U_r Û]ᵀ[U_r Û] − I‖²_F + ‖[V_r V̂]ᵀ[V_r V̂] − I‖²_F, without the frozen principal block
  (a constant), i.e. 2‖U_rᵀÛ‖² + ‖ÛᵀÛ − I‖² (and the same for V);
- singular values: |‖Ŵ‖²_F − ‖W‖²_F| (the sum of squared singular values is kept).

Storage: the tower keeps the pretrained W (standard keys, so CLIP weights load as into any tower) and each
:class:`SVDResidual` keeps the residual it started from (U_k, Σ_k, V_k, frozen buffers) beside the trained
factors; the model runs Ŵ = W + (Û diag(σ̂) V̂ᵀ − U_k diag(Σ_k) V_kᵀ), which is W exactly until training
moves the factors, and whose principal part W − U_k Σ_k V_kᵀ = W_r never changes. Loading CLIP weights
(:func:`~mfclip.models.weights.load_clip_weights_into`) splits the new weights again.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from mfclip.models.base import GatherFn, ModelOutput
from mfclip.models.clip_tower import (
    ClipTowerConfig,
    ClipTowerDetector,
    check_token_tower,
    embed_tokens,
    pooled_cls,
    run_block,
)
from mfclip.models.peers.losses import float32_losses
from mfclip.models.registry import register_model_type
from mfclip.utils.config import ConfigError

AttentionMatrix = Literal["q", "k", "v", "out"]
ATTENTION_MATRICES: tuple[AttentionMatrix, ...] = ("q", "k", "v", "out")


class EffortConfig(ClipTowerConfig):
    """Effort on an open_clip ViT (``type: effort``).

    ``residual_rank`` k: singular components trained per matrix (r = width − k stay frozen; the paper: 1).
    ``targets``: which attention matrices of every block are split (the paper: all four).
    ``orthogonal_weight`` and ``singular_value_weight`` weigh the two constraints against cross-entropy.
    """

    type: Literal["effort"] = "effort"
    residual_rank: int = Field(default=1, ge=1)
    targets: list[AttentionMatrix] = Field(default_factory=lambda: list(ATTENTION_MATRICES))
    orthogonal_weight: float = Field(default=1.0, ge=0.0)
    singular_value_weight: float = Field(default=1.0, ge=0.0)

    @field_validator("targets")
    @classmethod
    def _targets_unique(cls, value: list[AttentionMatrix]) -> list[AttentionMatrix]:
        if not value or len(set(value)) != len(value):
            raise ValueError("targets must name at least one of q, k, v, out, each once")
        return value


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """aᵀb for (n, k) factors as an elementwise product and sum (exact float32 under autocast)."""
    return (a.unsqueeze(2) * b.unsqueeze(1)).sum(dim=0)


def _low_rank(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """u diag(s) vᵀ (out × in) as a sum of k outer products, in the factors' precision."""
    return ((u * s).unsqueeze(1) * v.unsqueeze(0)).sum(dim=-1)


class SVDResidual(nn.Module):
    """The trained residual of one (out × in) weight: ``delta()`` = Û diag(σ̂) V̂ᵀ − U_k diag(Σ_k) V_kᵀ.

    ``u``, ``s``, ``v`` are the trained factors (Û, σ̂, V̂; V̂ stored as in × k); ``u0``, ``s0``, ``v0`` the
    frozen residual of the SVD they started from. :meth:`split` sets all of them from a weight.
    """

    def __init__(self, out_features: int, in_features: int, rank: int) -> None:
        super().__init__()
        if out_features != in_features:
            raise ValueError(f"SVDResidual splits square matrices, got {out_features} × {in_features}")
        self.rank = rank
        self.u = nn.Parameter(torch.zeros(out_features, rank))
        self.s = nn.Parameter(torch.zeros(rank))
        self.v = nn.Parameter(torch.zeros(in_features, rank))
        self.register_buffer("u0", torch.zeros(out_features, rank))
        self.register_buffer("s0", torch.zeros(rank))
        self.register_buffer("v0", torch.zeros(in_features, rank))

    @torch.no_grad()
    def split(self, weight: torch.Tensor) -> None:
        """SVD of ``weight``: its k smallest singular triplets become the residual (frozen copy, factors)."""
        if weight.is_meta:
            return
        u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
        k = self.rank
        for frozen, trained, value in (
            (self.u0, self.u, u[:, -k:]),
            (self.s0, self.s, s[-k:]),
            (self.v0, self.v, vh[-k:].t()),
        ):
            frozen.copy_(value)
            trained.copy_(value)

    def delta(self) -> torch.Tensor:
        """How far the trained residual has moved from the initial one (zero, exactly, until it trains)."""
        return _low_rank(self.u, self.s, self.v) - _low_rank(self.u0, self.s0, self.v0)

    def principal(self, weight: torch.Tensor) -> torch.Tensor:
        """The frozen principal part W_r = W − U_k diag(Σ_k) V_kᵀ of the original ``weight``."""
        return weight - _low_rank(self.u0, self.s0, self.v0).to(weight.dtype)

    def orthogonality_loss(self) -> torch.Tensor:
        """2‖U_rᵀÛ‖² + ‖ÛᵀÛ − I‖² + the same for V (‖[U_r Û]ᵀ[U_r Û] − I‖²_F without its constant block).

        [U_r U_k] is an orthonormal basis of the (square) weight's space, so ‖U_rᵀÛ‖² = ‖Û‖² − ‖U_kᵀÛ‖².
        """
        eye = torch.eye(self.rank, device=self.u.device)
        total = self.u.new_zeros(())
        for trained, start in ((self.u, self.u0), (self.v, self.v0)):
            # ‖U_rᵀÛ‖² ≥ 0; the subtraction can round a few ulps below zero, which is clipped
            cross = (trained.square().sum() - _gram(start, trained).square().sum()).clamp(min=0.0)
            total = total + 2.0 * cross + (_gram(trained, trained) - eye).square().sum()
        return total

    def singular_value_loss(self, weight: torch.Tensor) -> torch.Tensor:
        """|‖Ŵ‖²_F − ‖W‖²_F| = |2⟨W, Δ⟩ + ‖Δ‖²| with Ŵ = W + Δ (exactly 0 until the residual moves)."""
        delta = self.delta()
        return (2.0 * (weight.float() * delta).sum() + delta.square().sum()).abs()


class Effort(ClipTowerDetector):
    """A frozen open_clip ViT whose attention weights train only in their SVD residual subspace, + a head."""

    config: EffortConfig

    def __init__(self, config: EffortConfig) -> None:
        super().__init__(config)
        check_token_tower(self.visual)
        width = self.width
        if config.residual_rank >= width:
            raise ConfigError(
                f"residual_rank: {config.residual_rank} must be smaller than the tower width {width} "
                "(r = width − residual_rank principal components stay frozen)"
            )
        self.visual.requires_grad_(False)
        self.residuals = nn.ModuleList(
            nn.ModuleDict({name: SVDResidual(width, width, config.residual_rank) for name in config.targets})
            for _ in self.visual.transformer.resblocks
        )
        self.head = nn.Linear(width, 2)
        self.decompose()

    def on_clip_weights_loaded(self) -> None:
        self.decompose()

    @torch.no_grad()
    def decompose(self) -> None:
        """Split every targeted attention weight of the tower afresh (the residual factors restart)."""
        for block, parts in zip(self.visual.transformer.resblocks, self.residuals, strict=True):
            for name, residual in parts.items():
                residual.split(self.original_weight(block, name))

    def original_weight(self, block: nn.Module, name: str) -> torch.Tensor:
        """The tower's pretrained (frozen) weight of attention matrix ``name`` in ``block``."""
        width = self.width
        if name == "out":
            return block.attn.out_proj.weight
        index = ATTENTION_MATRICES.index(name)  # type: ignore[arg-type]
        return block.attn.in_proj_weight[index * width : (index + 1) * width]

    def split_matrices(self) -> list[tuple[SVDResidual, torch.Tensor]]:
        """Every (residual, original weight) pair of the model."""
        return [
            (residual, self.original_weight(block, name))
            for block, parts in zip(self.visual.transformer.resblocks, self.residuals, strict=True)
            for name, residual in parts.items()
        ]

    def effective_weights(self, block: nn.Module, parts: nn.ModuleDict) -> tuple[torch.Tensor | None, ...]:
        """Ŵ of one block: (fused q/k/v weight, output weight), each None where nothing of it is split."""
        in_proj = out_proj = None
        if any(name in parts for name in ("q", "k", "v")):
            dtype = block.attn.in_proj_weight.dtype
            in_proj = torch.cat(
                [
                    self.original_weight(block, name) + parts[name].delta().to(dtype)
                    if name in parts
                    else self.original_weight(block, name)
                    for name in ("q", "k", "v")
                ],
                dim=0,
            )
        if "out" in parts:
            original = block.attn.out_proj.weight
            out_proj = original + parts["out"].delta().to(original.dtype)
        return in_proj, out_proj

    def attention_weights(self) -> dict[str, torch.Tensor]:
        """The effective attention weights Ŵ, keyed by their names in ``visual.transformer``."""
        weights: dict[str, torch.Tensor] = {}
        blocks = zip(self.visual.transformer.resblocks, self.residuals, strict=True)
        for index, (block, parts) in enumerate(blocks):
            in_proj, out_proj = self.effective_weights(block, parts)
            if in_proj is not None:
                weights[f"resblocks.{index}.attn.in_proj_weight"] = in_proj
            if out_proj is not None:
                weights[f"resblocks.{index}.attn.out_proj.weight"] = out_proj
        return weights

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The CLS feature (B, width) of the tower run with the effective attention weights."""
        x = embed_tokens(self.visual, self.pixels(images))
        for block, parts in zip(self.visual.transformer.resblocks, self.residuals, strict=True):
            x, _ = run_block(block, x, *self.effective_weights(block, parts))
        return pooled_cls(self.visual, x)

    def compute_loss(
        self, output: ModelOutput, labels: torch.Tensor, gather: GatherFn | None = None
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy + λ_orth · mean orthogonality loss + λ_sv · mean singular-value loss."""
        with float32_losses(output.logits):
            ce = F.cross_entropy(output.logits.float(), labels)
            pairs = self.split_matrices()
            orthogonal = torch.stack([residual.orthogonality_loss() for residual, _ in pairs]).mean()
            singular = torch.stack(
                [residual.singular_value_loss(weight) for residual, weight in pairs]
            ).mean()
            loss = (
                ce + self.config.orthogonal_weight * orthogonal + self.config.singular_value_weight * singular
            )
            return {
                "loss": loss,
                "ce": ce.detach(),
                "orthogonal": orthogonal.detach(),
                "singular_value": singular.detach(),
            }


@register_model_type("effort", EffortConfig)
def build_effort(config: EffortConfig) -> Effort:
    """Builder for ``type: effort``."""
    return Effort(config)
