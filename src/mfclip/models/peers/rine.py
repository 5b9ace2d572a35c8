"""RINE (Koutlis and Papadopoulos, "Leveraging Representations from Intermediate Encoder-blocks for Synthetic
Image Detection", ECCV 2024, arXiv 2402.19091): the CLS tokens of every block of a frozen CLIP ViT, weighed
by a trainable importance estimator.

For n blocks, the class token of each block (by default the normalised input of its MLP, ``ln_2``, which
the authors' code reads; ``tap: block_output`` takes the block's output instead) gives g ∈ R^{n × width}.
A projection Q1 (dropout, then q × [Linear, ReLU, dropout]) maps each to d = ``proj_dim``. The Trainable
Importance Estimator holds A ∈ R^{n × d}; its importances are a softmax over the blocks, per feature,
w_{l,j} = exp(A_{l,j}) / Σ_m exp(A_{m,j}), and the image feature is z' = Σ_l w_l ⊙ Q1(g_l). A second
projection Q2 (dropout, q × [Linear, ReLU, dropout]) gives z, and the head (two Linear-ReLU-dropout layers,
then Linear(d, 1)) the fake logit. Loss: binary cross-entropy summed over the batch (as the authors
train; ξ was chosen with it) + ξ · supervised contrastive loss on z/‖z‖ (temperature τ), ξ =
``contrastive_weight``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mfclip.models.base import GatherFn, ModelOutput
from mfclip.models.clip_tower import (
    BinaryLogit,
    ClipTowerConfig,
    ClipTowerDetector,
    check_token_tower,
    embed_tokens,
    run_block,
)
from mfclip.models.peers.losses import float32_losses, supervised_contrastive
from mfclip.models.registry import register_model_type


class RINEConfig(ClipTowerConfig):
    """RINE on an open_clip ViT (``type: rine``).

    ``proj_dim`` d and ``proj_layers`` q of both projections, ``dropout`` of every dropout layer,
    ``contrastive_weight`` ξ and ``temperature`` τ of the supervised contrastive term, ``tap`` (which CLS
    token of each block is read) and ``ce_reduction`` (``sum``, the authors' training, under which their
    ξ was chosen: the cross-entropy summed over the batch; ``mean``: its batch mean, which weighs the
    contrastive term batch-size times more).
    """

    type: Literal["rine"] = "rine"
    proj_dim: int = Field(default=1024, gt=0)
    proj_layers: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    contrastive_weight: float = Field(default=0.2, ge=0.0)
    temperature: float = Field(default=0.07, gt=0.0)
    tap: Literal["mlp_input", "block_output"] = "mlp_input"
    ce_reduction: Literal["mean", "sum"] = "sum"


def _projection(in_features: int, width: int, layers: int, dropout: float) -> nn.Sequential:
    modules: list[nn.Module] = [nn.Dropout(dropout)]
    for index in range(layers):
        modules += [nn.Linear(in_features if index == 0 else width, width), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*modules)


class RINE(ClipTowerDetector):
    """A frozen open_clip ViT; its per-block CLS tokens → Q1 → importance-weighted sum → Q2 → head."""

    config: RINEConfig

    def __init__(self, config: RINEConfig) -> None:
        super().__init__(config)
        check_token_tower(self.visual)
        self.visual.requires_grad_(False)
        self.visual.eval()
        blocks = len(self.visual.transformer.resblocks)
        d, q, p = config.proj_dim, config.proj_layers, config.dropout
        self.project_blocks = _projection(self.width, d, q, p)
        self.importance = nn.Parameter(torch.randn(blocks, d))
        self.project_fused = _projection(d, d, q, p)
        self.head = nn.Sequential(
            nn.Linear(d, d),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(d, d),
            nn.ReLU(),
            nn.Dropout(p),
            BinaryLogit(d),
        )

    def train(self, mode: bool = True) -> RINE:
        super().train(mode)
        self.visual.eval()  # frozen: the tower is a fixed feature extractor
        return self

    def block_importances(self) -> torch.Tensor:
        """(n_blocks, proj_dim): softmax of A over the blocks; every feature's column sums to 1."""
        return self.importance.softmax(dim=0)

    def block_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The class token read at every block, (B, n_blocks, width)."""
        x = embed_tokens(self.visual, self.pixels(images))
        tokens = []
        for block in self.visual.transformer.resblocks:
            x, mlp_input = run_block(block, x)
            tokens.append((mlp_input if self.config.tap == "mlp_input" else x)[:, 0])
        return torch.stack(tokens, dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """z: the importance-weighted sum of the projected block tokens, projected again (B, proj_dim)."""
        projected = self.project_blocks(self.block_tokens(images))  # (B, n, d)
        weights = self.block_importances().to(projected.dtype)
        return self.project_fused((weights.unsqueeze(0) * projected).sum(dim=1))

    def compute_loss(
        self, output: ModelOutput, labels: torch.Tensor, gather: GatherFn | None = None
    ) -> dict[str, torch.Tensor]:
        """Binary cross-entropy (summed over the batch, or its mean) + ξ · SupCon on this process's batch."""
        with float32_losses(output.logits):
            assert output.image_features is not None
            ce = F.cross_entropy(output.logits.float(), labels, reduction=self.config.ce_reduction)
            contrastive = supervised_contrastive(
                F.normalize(output.image_features.float(), dim=-1), labels, self.config.temperature
            )
            loss = ce + self.config.contrastive_weight * contrastive
            return {"loss": loss, "ce": ce.detach(), "contrastive": contrastive.detach()}


@register_model_type("rine", RINEConfig)
def build_rine(config: RINEConfig) -> RINE:
    """Builder for ``type: rine``."""
    return RINE(config)
