"""Shared parts of the detectors built on one open_clip ViT image tower (the CLIP baselines and the peers).

- :class:`ClipTowerDetector`: a :class:`~mfclip.models.base.DetectorModel` holding an open_clip
  ``VisionTransformer`` (``self.visual``, standard state-dict keys, so every CLIP weight format loads into it
  through ``clip_towers()``) and the input normalisation; Grad-CAM targets the last block's ``ln_1``.
- :func:`embed_tokens`, :func:`run_block`, :func:`pooled_cls`: the tower's forward in steps, for methods that
  read intermediate tokens (RINE), the CLS feature before the projection (Effort, GenD) or run the blocks
  with replaced weights (Effort). Together they compute exactly ``visual(pixels)`` (tested).
- :class:`BinaryLogit`: a head with one fake logit ``z`` whose logits are ``(0, z)``, so cross-entropy on them
  is binary cross-entropy on ``z`` and P(fake) is ``sigmoid(z)`` (UnivFD and RINE train that way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from pydantic import Field
from torch import nn

from mfclip.inputs import InputConfig
from mfclip.models.base import DetectorModel, ModelOutput, to_parameter_dtype
from mfclip.models.config import ClipViTConfig
from mfclip.models.vision import build_clip_vit
from mfclip.utils.config import ConfigError, StrictConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Per-channel (mean, std) of the fixed input normalisations.
NORMALIZATION_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "clip": (tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def check_images(images: torch.Tensor, size: int) -> None:
    """Raise ValueError naming the problem unless ``images`` is a float (B, 3, size, size) batch."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"images must have shape (B, 3, {size}, {size}), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")


class ImageNormalize(nn.Module):
    """(x − mean) / std per channel, as non-persistent buffers (checkpoints do not carry them)."""

    def __init__(self, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> None:
        super().__init__()
        self.enabled = mean is not None and std is not None
        mean_t = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
        std_t = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / std_t, persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return images
        return torch.addcmul(self.shift.to(images.dtype), images, self.scale.to(images.dtype))


# ---------------------------------------------------------------------------------------------------
# The tower's forward, step by step
# ---------------------------------------------------------------------------------------------------


def check_token_tower(visual: VisionTransformer, field: str = "clip_vit") -> None:
    """Refuse towers whose forward is not the plain CLS-token ViT that the step-wise helpers reproduce."""
    if (
        getattr(visual, "attn_pool", None) is not None
        or visual.pool_type != "tok"
        or visual.final_ln_after_pool
    ):
        raise ConfigError(
            f"{field}: this model reads the CLS token of a standard CLIP ViT; the tower's pooling "
            f"(pool_type {visual.pool_type!r}, attentional pool or final LN after pooling) is not supported"
        )
    for block in visual.transformer.resblocks:
        if type(block) is not ResidualAttentionBlock or not block.attn.batch_first:
            raise ConfigError(
                f"{field}: this model needs open_clip's standard batch-first ResidualAttentionBlock, the "
                f"tower has {type(block).__name__} blocks"
            )


def embed_tokens(visual: VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    """Patch embeddings with the class token prepended, positional embeddings added, then ``ln_pre``."""
    x = visual.conv1(pixels)  # (B, width, grid, grid)
    x = x.flatten(2).transpose(1, 2)  # (B, grid², width)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def run_block(
    block: ResidualAttentionBlock,
    x: torch.Tensor,
    in_proj_weight: torch.Tensor | None = None,
    out_proj_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One residual block on (B, L, width) tokens: its output and the normalised input of its MLP (``ln_2``).

    ``in_proj_weight`` / ``out_proj_weight`` replace the attention's weights (Effort runs its effective
    weights this way; its biases stay the block's).
    """
    normed = block.ln_1(x)
    if in_proj_weight is None and out_proj_weight is None:
        attended = block.attention(q_x=normed)
    else:
        attn = block.attn
        tokens = normed.transpose(0, 1)  # (L, B, width): the functional form's layout
        attended = F.multi_head_attention_forward(
            tokens,
            tokens,
            tokens,
            attn.embed_dim,
            attn.num_heads,
            attn.in_proj_weight if in_proj_weight is None else in_proj_weight,
            attn.in_proj_bias,
            None,
            None,
            False,
            0.0,
            attn.out_proj.weight if out_proj_weight is None else out_proj_weight,
            attn.out_proj.bias,
            training=False,
            need_weights=False,
        )[0].transpose(0, 1)
    x = x + block.ls_1(attended)
    mlp_input = block.ln_2(x)
    return x + block.ls_2(block.mlp(mlp_input)), mlp_input


def pooled_cls(visual: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """``ln_post`` of the class token: the tower's image feature before its projection (width wide)."""
    return visual.ln_post(tokens[:, 0])


def vit_token_map(visual: VisionTransformer) -> Callable[[torch.Tensor], torch.Tensor]:
    """Grad-CAM reshape: (B, 1 + grid², C) block tokens → (B, C, grid, grid), the class token dropped."""
    grid = visual.grid_size

    def tokens_to_map(activation: torch.Tensor) -> torch.Tensor:
        patches = activation[:, 1:]
        return patches.reshape(patches.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)

    return tokens_to_map


# ---------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------


class BinaryLogit(nn.Module):
    """Linear(in_features, 1) giving the fake logit z; returns logits (0, z) of shape (B, 2).

    Cross-entropy on these logits equals binary cross-entropy on z, and softmax(logits)[1] = sigmoid(z).
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    @property
    def weight(self) -> nn.Parameter:
        return self.linear.weight

    @property
    def bias(self) -> nn.Parameter:
        return self.linear.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        fake = self.linear(features)
        return torch.cat([torch.zeros_like(fake), fake], dim=-1)


# ---------------------------------------------------------------------------------------------------
# Base config and model
# ---------------------------------------------------------------------------------------------------


class ClipTowerConfig(StrictConfig):
    """Fields every detector on one open_clip ViT image tower has.

    ``embed_dim`` is the tower's projection width (768 for OpenAI ViT-L/14, 512 for ViT-B/16): pretrained
    weights only load when it matches theirs, even for methods that read the feature before the projection.
    """

    type: str
    name: str | None = None
    description: str = ""
    image_size: int = Field(default=224, gt=0)
    input: InputConfig = Field(default_factory=InputConfig)  # how images become image_size inputs
    embed_dim: int = Field(default=512, gt=0)
    clip_vit: ClipViTConfig = Field(default_factory=ClipViTConfig)
    normalize: Literal["clip", "none"] = "clip"


class ClipTowerDetector(DetectorModel):
    """Base of the detectors on one open_clip ``VisionTransformer`` (``self.visual``) and a head.

    Subclasses set ``self.head`` and implement ``features(images)``: ``forward`` returns the head's logits
    (``logits(features)``) and the features; ``pixels(images)`` checks and normalises the input.
    """

    config: ClipTowerConfig

    def __init__(self, config: ClipTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = build_clip_vit(config.clip_vit, config.image_size, config.embed_dim)
        mean, std = NORMALIZATION_STATS["clip"] if config.normalize == "clip" else (None, None)
        self.normalize = ImageNormalize(mean, std)

    @property
    def width(self) -> int:
        """Width of the tower's tokens (its feature before the projection)."""
        return int(self.visual.transformer.width)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` checked (float (B, 3, S, S) in [0, 1]), normalised, in the tower's parameter dtype."""
        check_images(images, self.image_size)
        return to_parameter_dtype(self.visual, self.normalize(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The image feature (B, D) the head scores."""
        raise NotImplementedError

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 2) logits (real, fake) of image features; the default is ``self.head(features)``."""
        return self.head(features)

    def forward(
        self,
        images: torch.Tensor,
        prompt_tokens: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        features = self.features(images)
        return ModelOutput(logits=self.logits(features), image_features=features)

    def clip_towers(self) -> dict[str, nn.Module | None]:
        return {"visual": self.visual, "text": None}

    def explain_target_layers(self) -> list[nn.Module]:
        return [self.visual.transformer.resblocks[-1].ln_1]

    def explain_reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return vit_token_map(self.visual)
