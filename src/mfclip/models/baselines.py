"""Baseline detectors that run in the same harness as MFCLIP (training, evaluation, export, serving).

- ``clip_probe``: a frozen open_clip image tower and a trainable linear head (a CLIP linear probe);
- ``clip_finetune``: the same image tower and head, everything trainable (full fine-tuning);
- ``timm_cnn``: any timm image classifier with a two-class head, e.g. ``legacy_xception`` or
  ``efficientnet_b4`` (built with ``pretrained=False``; load local weights with
  :meth:`TimmCNN.load_backbone_weights`).

Like every detector they take RGB images in ``[0, 1]`` of shape (B, 3, S, S) and normalise internally.
The CLIP baselines expose their tower through ``clip_towers()``, so ``create_model(...,
clip_weights=PATH)`` loads pretrained CLIP weights into them exactly as into MFCLIP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from mfclip.models.base import DetectorModel, ModelOutput, to_parameter_dtype
from mfclip.models.clip_tower import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATION_STATS,
    BinaryLogit,
    ClipTowerConfig,
    ClipTowerDetector,
    ImageNormalize,
    check_images,
)
from mfclip.models.registry import register_model_type
from mfclip.utils.config import ConfigError, StrictConfig

Normalization = Literal["clip", "imagenet", "inception", "timm", "none"]


# ---------------------------------------------------------------------------------------------------
# CLIP linear probe and full fine-tune
# ---------------------------------------------------------------------------------------------------


class ClipBaselineConfig(ClipTowerConfig):
    """A CLIP image tower (any open_clip ViT config) with a linear two-class head on its embedding.

    ``type: clip_probe`` freezes the tower (only the head trains); ``type: clip_finetune`` trains both.
    ``normalize_features`` L2-normalises the tower's embedding before the head (``feature_scale``
    then multiplies it, since unit vectors give tiny logits). ``binary_logit`` makes the head a single
    fake logit z with logits (0, z), so training minimises binary cross-entropy on z (UnivFD's head);
    ``head_init_std`` is the standard deviation of the head's initial weights (its bias starts at 0).
    """

    type: Literal["clip_probe", "clip_finetune"] = "clip_probe"
    normalize_features: bool = False
    feature_scale: float = Field(default=10.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    binary_logit: bool = False
    head_init_std: float = Field(default=0.01, ge=0.0)

    @property
    def frozen_backbone(self) -> bool:
        return self.type == "clip_probe"


class ClipBaseline(ClipTowerDetector):
    """open_clip ``VisionTransformer`` → (optional L2 norm) → dropout → linear head."""

    config: ClipBaselineConfig

    def __init__(self, config: ClipBaselineConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head: nn.Module = (
            BinaryLogit(config.embed_dim) if config.binary_logit else nn.Linear(config.embed_dim, 2)
        )
        nn.init.normal_(self.head.weight, std=config.head_init_std)
        nn.init.zeros_(self.head.bias)
        if config.frozen_backbone:
            self.visual.requires_grad_(False)
            self.visual.eval()

    def train(self, mode: bool = True) -> ClipBaseline:
        super().train(mode)
        if self.config.frozen_backbone:
            self.visual.eval()  # a probe's features never change, whatever the training mode
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The tower's image embedding (B, embed_dim), unnormalised."""
        return self.visual(self.pixels(images))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.config.normalize_features:
            features = F.normalize(features, dim=-1) * self.config.feature_scale
        return self.head(self.dropout(features))


@register_model_type("clip_probe", ClipBaselineConfig)
def build_clip_probe(config: ClipBaselineConfig) -> ClipBaseline:
    """Builder for ``type: clip_probe`` (frozen CLIP image tower + linear head)."""
    return ClipBaseline(config)


@register_model_type("clip_finetune", ClipBaselineConfig)
def build_clip_finetune(config: ClipBaselineConfig) -> ClipBaseline:
    """Builder for ``type: clip_finetune`` (CLIP image tower + linear head, all trainable)."""
    return ClipBaseline(config)


# ---------------------------------------------------------------------------------------------------
# timm CNN
# ---------------------------------------------------------------------------------------------------


# timm.create_model arguments that read or download weights.
_TIMM_WEIGHT_ARGUMENTS = frozenset(
    {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"}
)


class TimmCNNConfig(StrictConfig):
    """A timm classifier (``arch``: any ``timm.list_models()`` name) with a two-class head.

    ``normalize: timm`` uses the mean/std the architecture's pretrained weights expect (Inception
    statistics for Xception, ImageNet for EfficientNet). Weights are never downloaded.
    """

    type: Literal["timm_cnn"] = "timm_cnn"
    name: str | None = None
    description: str = ""
    arch: str = "legacy_xception"
    image_size: int = Field(default=299, gt=0)
    normalize: Normalization = "timm"
    drop_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict)  # extra timm arguments

    @field_validator("kwargs")
    @classmethod
    def _no_weight_loading(
        cls, value: dict[str, int | float | str | bool]
    ) -> dict[str, int | float | str | bool]:
        # A checkpoint's config.json must not make timm read or download weights on its own loaders.
        loading = sorted(set(value) & _TIMM_WEIGHT_ARGUMENTS)
        if loading:
            raise ValueError(
                f"{', '.join(loading)}: timm arguments that load weights are not accepted (the model is "
                "built with pretrained=False; load weights with TimmCNN.load_backbone_weights)"
            )
        return value


def _timm_stats(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import timm

    config = timm.get_pretrained_cfg(arch)
    mean = getattr(config, "mean", None) if config is not None else None
    std = getattr(config, "std", None) if config is not None else None
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(mean), tuple(std)


class TimmCNN(DetectorModel):
    """A timm image classifier with two outputs (real, fake)."""

    config: TimmCNNConfig

    def __init__(self, config: TimmCNNConfig) -> None:
        super().__init__()
        import timm

        self.config = config
        if not timm.is_model(config.arch):
            from mfclip.utils.config import closest

            hint = closest(config.arch, timm.list_models())
            suggestion = f"; did you mean {hint!r}?" if hint else ""
            raise ConfigError(f"arch: unknown timm model {config.arch!r}{suggestion}")
        self.network = timm.create_model(
            config.arch,
            pretrained=False,
            num_classes=2,
            drop_rate=config.drop_rate,
            **config.kwargs,
        )
        if config.normalize == "none":
            mean, std = None, None
        elif config.normalize == "timm":
            mean, std = _timm_stats(config.arch)
        else:
            mean, std = NORMALIZATION_STATS[config.normalize]
        self.normalize = ImageNormalize(mean, std)

    def forward(
        self,
        images: torch.Tensor,
        prompt_tokens: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        check_images(images, self.image_size)
        network = self.network
        inputs = to_parameter_dtype(network, self.normalize(images))
        features = network.forward_head(network.forward_features(inputs), pre_logits=True)
        return ModelOutput(logits=network.get_classifier()(features), image_features=features)

    def load_backbone_weights(self, path: str | Path, strict: bool = False) -> dict[str, list[str]]:
        """Load a timm/torchvision state dict (``.pth``, ``.bin``, ``.safetensors``) into the network.

        The classifier of the file (e.g. 1000 ImageNet classes) is skipped when its shape differs from
        the two-class head. Returns ``{"missing": [...], "unexpected": [...]}``.
        """
        from mfclip.models.checkpoint import CheckpointError, load_state_dict_into, read_torch_file

        state = read_torch_file(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
        own = self.network.state_dict()
        classifier = self.network.default_cfg.get("classifier", "")
        kept = {
            k: v
            for k, v in state.items()
            if isinstance(v, torch.Tensor)
            and not (k.startswith(f"{classifier}.") and k in own and v.shape != own[k].shape)
        }
        return load_state_dict_into(self.network, kept, strict=strict, source=str(path))

    def explain_target_layers(self) -> list[nn.Module]:
        info = getattr(self.network, "feature_info", None)
        if info:
            last = info[-1] if isinstance(info, list) else info.info[-1]
            name = last.get("module") if isinstance(last, dict) else None
            if name:
                return [self.network.get_submodule(name)]
        raise NotImplementedError(f"no Grad-CAM target layer known for timm model {self.config.arch!r}")


@register_model_type("timm_cnn", TimmCNNConfig)
def build_timm_cnn(config: TimmCNNConfig) -> TimmCNN:
    """Builder for ``type: timm_cnn``."""
    return TimmCNN(config)
