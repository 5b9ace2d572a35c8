"""GenD (Yermakov, Cech, Matas and Fritz, "Deepfake Detection that Generalizes Across Benchmarks",
WACV 2026, arXiv 2508.06248): a CLIP ViT of which only the LayerNorms are tuned, features on the hypersphere.

The tower's parameters are frozen except the affine weights and biases of every LayerNorm (``ln_pre``,
``ln_1`` and ``ln_2`` of each block, ``ln_post``). The image feature is the CLS feature before the
projection (``ln_post`` of the class token), L2-normalised onto the unit sphere; a linear head scores it.
The loss is cross-entropy plus the metric-learning terms of Wang and Isola on the unit features:
``uniformity_weight`` · uniformity (log E exp(−t‖x_i − x_j‖²) over the batch) + ``alignment_weight`` ·
label-aware alignment (E ‖x_i − x_j‖^α over pairs with the same label).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mfclip.models.base import GatherFn, ModelOutput
from mfclip.models.clip_tower import (
    ClipTowerConfig,
    ClipTowerDetector,
    check_token_tower,
    embed_tokens,
    pooled_cls,
)
from mfclip.models.peers.losses import alignment_loss, float32_losses, uniformity_loss
from mfclip.models.registry import register_model_type


class GenDConfig(ClipTowerConfig):
    """GenD on an open_clip ViT (``type: gend``): LayerNorm tuning, unit features, a linear head.

    Loss weights and the exponents of the two metric-learning terms (the paper: 0.5, 0.1, t = 2, α = 2).
    """

    type: Literal["gend"] = "gend"
    uniformity_weight: float = Field(default=0.5, ge=0.0)
    alignment_weight: float = Field(default=0.1, ge=0.0)
    uniformity_t: float = Field(default=2.0, gt=0.0)
    alignment_alpha: float = Field(default=2.0, gt=0.0)


class GenD(ClipTowerDetector):
    """An open_clip ViT with trainable LayerNorms only → L2-normalised CLS feature → linear head."""

    config: GenDConfig

    def __init__(self, config: GenDConfig) -> None:
        super().__init__(config)
        check_token_tower(self.visual)
        self.visual.requires_grad_(False)
        for norm in self.tuned_norms():
            norm.requires_grad_(True)
        self.head = nn.Linear(self.width, 2)

    def tuned_norms(self) -> list[nn.LayerNorm]:
        """The tower's LayerNorms, the only tower modules GenD trains."""
        return [module for module in self.visual.modules() if isinstance(module, nn.LayerNorm)]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The unit CLS feature (B, width)."""
        tokens = self.visual.transformer(embed_tokens(self.visual, self.pixels(images)))
        return F.normalize(pooled_cls(self.visual, tokens), dim=-1)

    def compute_loss(
        self, output: ModelOutput, labels: torch.Tensor, gather: GatherFn | None = None
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy + uniformity + label-aware alignment on this process's batch of unit features."""
        with float32_losses(output.logits):
            assert output.image_features is not None
            config = self.config
            ce = F.cross_entropy(output.logits.float(), labels)
            uniformity = uniformity_loss(output.image_features, t=config.uniformity_t)
            alignment = alignment_loss(output.image_features, labels, alpha=config.alignment_alpha)
            loss = ce + config.uniformity_weight * uniformity + config.alignment_weight * alignment
            return {
                "loss": loss,
                "ce": ce.detach(),
                "uniformity": uniformity.detach(),
                "alignment": alignment.detach(),
            }


@register_model_type("gend", GenDConfig)
def build_gend(config: GenDConfig) -> GenD:
    """Builder for ``type: gend``."""
    return GenD(config)
