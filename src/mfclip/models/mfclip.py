"""The MFCLIP model: MVE → v → head (P(fake)); FLE → t for ℓcmc (SPA-gated) and ℓkl during training.

Inference runs the vision encoder and the head only; the text tower, the predictor and SPA exist for
training and are not even built when the losses that need them are switched off (so data-parallel
training never sees unused parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mfclip.models.base import DetectorModel, GatherFn, ModelOutput
from mfclip.models.config import ModelConfig
from mfclip.models.losses import clamped_logit_scale, contrastive_loss, kl_alignment_loss
from mfclip.models.registry import register_model_type
from mfclip.models.spa import SamplePairAttention
from mfclip.models.text import FineGrainedLanguageEncoder
from mfclip.models.vision import MultiModalVisionEncoder


class MFCLIPInference(nn.Module):
    """Images (B, 3, S, S) in [0, 1] → P(fake) (B,): the vision encoder and the head, nothing else."""

    def __init__(self, vision: MultiModalVisionEncoder, head: nn.Module) -> None:
        super().__init__()
        self.vision = vision
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.vision.check_images(images)
        features, _ = self.vision(images)
        logits = self.head(F.normalize(features, dim=-1))
        return logits.float().softmax(dim=-1)[:, 1]


class MFCLIP(DetectorModel):
    """Multi-modal fine-grained CLIP detector (see ``docs/model.md``)."""

    config: ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        losses = config.losses
        self.vision = MultiModalVisionEncoder(config)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2))
        if losses.ce == 0:
            # Without ℓce nothing trains the head: keep it fixed (representation-only ablation).
            self.head.requires_grad_(False)
        self.text: FineGrainedLanguageEncoder | None = (
            FineGrainedLanguageEncoder(config.text, dim) if losses.uses_text else None
        )
        if self.text is not None and losses.cmc == 0 and losses.kl_detach_text:
            # ℓkl alone with a detached target sends no gradient to the text tower: keep it fixed.
            self.text.requires_grad_(False)
        text_dim = self.text.output_dim if self.text is not None else dim
        self.predictor: nn.Linear | None = nn.Linear(dim, text_dim) if losses.kl > 0 else None
        self.spa: SamplePairAttention | None = None
        if losses.cmc > 0 and config.spa.mode != "none":
            self.spa = SamplePairAttention(config.spa, dim)
        # The learnable log logit scale s (a fixed buffer when learn_temperature is off).
        init = torch.tensor(losses.logit_scale_init)
        if losses.cmc > 0 and losses.learn_temperature:
            self.logit_scale = nn.Parameter(init)
        elif losses.cmc > 0:
            self.register_buffer("logit_scale", init)
        else:
            self.logit_scale = None

    # ---- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,
        prompt_tokens: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Logits (B, 2) and the fused visual feature; with prompts (and a text loss on) also t and pred."""
        self.vision.check_images(images)
        text_features = None
        if prompt_tokens is not None and self.text is not None:
            if prompt_tokens.shape[0] != images.shape[0]:
                raise ValueError(
                    f"prompt_tokens has {prompt_tokens.shape[0]} rows but images has {images.shape[0]}"
                )
            # The text encoder finds distinct prompts with a host synchronisation; running it first
            # lets that happen before the image branch's kernels are queued.
            text_features = self.text(prompt_tokens, prompt_mask)
        features, extras = self.vision(images)
        normalized = F.normalize(features, dim=-1)
        output = ModelOutput(logits=self.head(normalized), image_features=features, extras=extras)
        if text_features is not None:
            output.text_features = text_features
            if self.predictor is not None:
                output.text_prediction = self.predictor(normalized)
        return output

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The fused visual feature v (B, embed_dim), unnormalised."""
        self.vision.check_images(images)
        return self.vision(images)[0]

    def encode_text(
        self, prompt_tokens: torch.Tensor, prompt_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The fused text feature t (B, embed_dim), unnormalised."""
        if self.text is None:
            raise ValueError("this model has no text tower (losses.cmc and losses.kl are both 0)")
        return self.text(prompt_tokens, prompt_mask)

    # ---- losses -------------------------------------------------------------------------------------
    def current_logit_scale(self) -> torch.Tensor | None:
        """exp(s) with s clamped to [0, ln losses.logit_scale_max]; None when ℓcmc is off."""
        if self.logit_scale is None:
            return None
        return clamped_logit_scale(self.logit_scale.float(), self.config.losses.logit_scale_max)

    def compute_loss(
        self, output: ModelOutput, labels: torch.Tensor, gather: GatherFn | None = None
    ) -> dict[str, torch.Tensor]:
        """``loss`` = ce·ℓce + cmc·ℓcmc + kl·ℓkl, plus each detached term and the logit scale.

        Terms with weight 0 are not computed. In training mode a text term with a non-zero weight needs
        the text features (call forward with prompt_tokens); in evaluation missing ones are left out.
        Every term is computed in float32 with autocast disabled (mixed precision runs the towers, not
        the losses), whatever the dtype of the features or of the model.
        """
        logits = output.logits
        if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
        invalid = labels[(labels != 0) & (labels != 1)]
        if invalid.numel():
            raise ValueError(f"labels must be 0 (real) or 1 (fake), got {invalid[0].item()!r}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._float32_losses(output, labels, gather)

    def _float32_losses(
        self, output: ModelOutput, labels: torch.Tensor, gather: GatherFn | None
    ) -> dict[str, torch.Tensor]:
        logits = output.logits
        losses = self.config.losses
        total = logits.new_zeros((), dtype=torch.float32)
        result: dict[str, torch.Tensor] = {}
        if losses.ce > 0:
            ce = F.cross_entropy(logits.float(), labels.long())
            total = total + losses.ce * ce
            result["ce"] = ce.detach()
        if self.text is not None and output.text_features is None and self.training:
            raise ValueError(
                "training MFCLIP with losses.cmc or losses.kl > 0 needs prompt_tokens in forward "
                "(or set both weights to 0)"
            )
        if output.text_features is not None:
            if losses.cmc > 0:
                assert output.image_features is not None
                scale = self.current_logit_scale()
                assert scale is not None
                cmc = contrastive_loss(
                    F.normalize(output.image_features.float(), dim=-1),
                    F.normalize(output.text_features.float(), dim=-1),
                    scale,
                    self.spa,
                    gather,
                )
                total = total + losses.cmc * cmc
                result["cmc"] = cmc.detach()
                result["logit_scale"] = scale.detach()
            if losses.kl > 0 and output.text_prediction is not None:
                kl = kl_alignment_loss(
                    output.text_features.float(),
                    output.text_prediction.float(),
                    losses.kl_temperature,
                    losses.kl_detach_text,
                )
                total = total + losses.kl * kl
                result["kl"] = kl.detach()
        result["loss"] = total
        return result

    # ---- interface --------------------------------------------------------------------------------
    def uses_text(self) -> bool:
        return self.text is not None

    def inference_module(self) -> nn.Module:
        return MFCLIPInference(self.vision, self.head)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.inference_module()(images)

    def clear_prompt_cache(self) -> None:
        """Drop the cached prompt features (needed only after editing text weights through ``.data``)."""
        if self.text is not None:
            self.text.clear_prompt_cache()

    def clip_towers(self) -> dict[str, nn.Module | None]:
        return {
            "visual": self.vision.clip_vit,
            "text": self.text.tower if self.text is not None else None,
        }

    def explain_target_layers(self) -> list[nn.Module]:
        return self.vision.explain_target_layers()

    def explain_reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self.vision.explain_reshape_transform()


@register_model_type("mfclip", ModelConfig)
def build_mfclip(config: ModelConfig) -> MFCLIP:
    """Builder for ``type: mfclip`` model configs."""
    return MFCLIP(config)
