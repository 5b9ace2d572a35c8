"""The multi-modal vision encoder (MVE): a global image branch and a richest-patch SRM noise branch.

- ``clip_vit``: an ``open_clip.transformer.VisionTransformer`` (any open_clip ViT config) on the
  CLIP-normalised image.
- ``cvit``: the released VGG-style CNN whose last feature map becomes one token, followed by a CLS
  token and a small pre-norm transformer.
- noise branch: the richest patch of a grid (lowest GLCM homogeneity), its SRM residual, the first VGG
  blocks → one token → CLS → transformer.

The branch outputs (each ``embed_dim`` wide) are fused by an element-wise sum or by concatenation and a
linear projection.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn

from mfclip.models.base import to_parameter_dtype
from mfclip.models.config import ClipViTConfig, ModelConfig, TokenEncoderConfig
from mfclip.ops import richest_patch, srm_residual
from mfclip.utils.config import ConfigError


def float32_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images widened to float32 when they come in a narrower float dtype (float64 stays float64)."""
    return images if images.dtype in (torch.float32, torch.float64) else images.float()


def vgg_blocks(in_channels: int, channels: list[int], convs_per_block: list[int]) -> nn.Sequential:
    """Blocks of (conv3×3 + BatchNorm + ReLU) × n, each ending in a 2×2 max-pool."""
    blocks = []
    for out_channels, count in zip(channels, convs_per_block, strict=True):
        layers: list[nn.Module] = []
        for _ in range(count):
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
    return nn.Sequential(*blocks)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, scale: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = scale
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        return self.out(attended.transpose(1, 2).reshape(batch, length, width))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_dim: int, scale: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads, scale)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenEncoder(nn.Module):
    """VGG CNN → the whole feature map flattened into one token → Linear → [CLS, token] → transformer.

    Returns the CLS output projected to ``out_dim``. The flatten→linear size follows ``input_size``.
    """

    def __init__(self, config: TokenEncoderConfig, input_size: int, out_dim: int, name: str) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.input_size = input_size
        self.features = vgg_blocks(3, config.channels, config.convs_per_block)
        side = input_size // config.downsampling
        self.to_token = nn.Linear(config.channels[-1] * side * side, config.width)
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.width))
        if config.batch_position_embedding:
            self.position_embedding = nn.Parameter(torch.empty(config.max_batch, 1, config.width))
        else:
            self.position_embedding = nn.Parameter(torch.empty(1, 2, config.width))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.02)
        head_dim = config.width // config.heads
        scale = (config.width if config.attention_scale == "model_dim" else head_dim) ** -0.5
        self.blocks = nn.Sequential(
            *[_Block(config.width, config.heads, config.mlp_dim, scale) for _ in range(config.layers)]
        )
        self.proj: nn.Module = nn.Identity() if config.width == out_dim else nn.Linear(config.width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        token = self.to_token(self.features(x).flatten(1)).unsqueeze(1)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1).to(token.dtype), token], dim=1)
        if self.config.batch_position_embedding:
            if batch > self.config.max_batch:
                raise ValueError(
                    f"{self.name}.batch_position_embedding supports batches of at most "
                    f"{self.config.max_batch} ({self.name}.max_batch); got a batch of {batch}"
                )
            tokens = tokens + self.position_embedding[:batch].to(tokens.dtype)
        else:
            tokens = tokens + self.position_embedding.to(tokens.dtype)
        return self.proj(self.blocks(tokens)[:, 0])


def build_clip_vit(config: ClipViTConfig, image_size: int, embed_dim: int) -> VisionTransformer:
    """An open_clip ``VisionTransformer`` with standard state_dict keys and output ``embed_dim``."""
    sizes = config.resolved()
    if image_size % sizes["patch_size"]:
        raise ConfigError(
            f"image_size {image_size} is not divisible by the clip_vit patch size {sizes['patch_size']}"
        )
    extra = {
        k: sizes[k]
        for k in ("ls_init_value", "no_ln_pre", "pool_type", "final_ln_after_pool", "pos_embed_type")
        if k in sizes
    }
    return VisionTransformer(
        image_size=image_size,
        patch_size=sizes["patch_size"],
        width=sizes["width"],
        layers=sizes["layers"],
        heads=sizes["heads"],
        mlp_ratio=sizes["mlp_ratio"],
        output_dim=embed_dim,
        act_layer=QuickGELU if sizes["quick_gelu"] else nn.GELU,
        **extra,
    )


class MultiModalVisionEncoder(nn.Module):
    """Images (B, 3, S, S) in [0, 1] → fused visual feature ``v`` (B, embed_dim)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        vision = config.vision
        self.image_size = config.image_size
        self.clip_vit: VisionTransformer | None = None
        self.cvit: TokenEncoder | None = None
        self.noise: TokenEncoder | None = None
        if vision.image_branch:
            if vision.global_branch == "clip_vit":
                self.clip_vit = build_clip_vit(vision.clip_vit, config.image_size, config.embed_dim)
            else:
                self.cvit = TokenEncoder(vision.cvit, config.image_size, config.embed_dim, "vision.cvit")
        if vision.noise_branch:
            self.noise = TokenEncoder(vision.noise, config.noise_patch_size, config.embed_dim, "vision.noise")
        both = vision.image_branch and vision.noise_branch
        self.fuse: nn.Module | None = (
            nn.Linear(2 * config.embed_dim, config.embed_dim) if both and vision.fusion == "concat" else None
        )
        mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
        self.register_buffer("input_scale", 1.0 / std, persistent=False)
        self.register_buffer("input_shift", -mean / std, persistent=False)

    @property
    def global_branch(self) -> nn.Module | None:
        return self.clip_vit if self.clip_vit is not None else self.cvit

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ValueError naming the problem unless ``images`` is a float (B, 3, S, S) batch."""
        size = self.image_size
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (B, 3, {size}, {size}), got {tuple(images.shape)}")
        if images.shape[1] != 3:
            raise ValueError(
                f"images must have 3 channels (RGB), got {images.shape[1]} in shape {tuple(images.shape)}"
            )
        if tuple(images.shape[2:]) != (size, size):
            raise ValueError(
                f"images must be {size}×{size} (the model's image_size), got "
                f"{images.shape[2]}×{images.shape[3]}"
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch")

    def global_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the global branch sees: normalised pixels, or the released 0–255 transposed input.

        Computed in the pixels' dtype (float32 from :meth:`forward`); the branch casts it to its own.
        """
        if self.config.vision.release_input:
            return images.transpose(-1, -2) * 255.0
        if self.config.vision.normalize == "clip":
            return torch.addcmul(self.input_shift.to(images.dtype), images, self.input_scale.to(images.dtype))
        return images

    def noise_input(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The SRM residual of the selected patch (float32), and the selected patch index per image.

        The operators always see float32 pixels with autocast off, so the chosen patch and its residual do
        not depend on the model's dtype or on mixed precision.
        """
        noise = self.config.vision.noise
        generator = None
        if noise.patch_mode == "random" and not self.training:
            # Evaluation stays reproducible: the same random patches every call.
            generator = torch.Generator(device=images.device).manual_seed(0)
        with torch.autocast(device_type=images.device.type, enabled=False):
            pixels = float32_pixels(images)
            patches, index = richest_patch(pixels, noise.grid, noise.patch_mode, generator)
            return srm_residual(patches, input_scale=noise.srm_input_scale), index

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused feature (B, embed_dim) of float [0, 1] images and extras (``patch_index``).

        Half-precision pixels are widened to float32 first; each branch then casts its own input to the
        dtype of its parameters, so a model cast to bfloat16 takes the same float32 pixels.
        """
        images = float32_pixels(images)
        extras: dict[str, torch.Tensor] = {}
        outputs = []
        branch = self.global_branch
        if branch is not None:
            outputs.append(branch(to_parameter_dtype(branch, self.global_input(images))))
        if self.noise is not None:
            residual, index = self.noise_input(images)
            extras["patch_index"] = index
            outputs.append(self.noise(to_parameter_dtype(self.noise, residual)))
        if len(outputs) == 1:
            return outputs[0], extras
        if self.fuse is not None:
            return self.fuse(torch.cat(outputs, dim=-1)), extras
        return outputs[0] + outputs[1], extras

    # ---- Grad-CAM on the image branch --------------------------------------------------------------
    def explain_target_layers(self) -> list[nn.Module]:
        if self.clip_vit is not None:
            return [self.clip_vit.transformer.resblocks[-1].ln_1]
        if self.cvit is not None:
            last_block = self.cvit.features[-1]
            return [last_block[-2]]  # the last ReLU, before the block's max-pool
        raise NotImplementedError("Grad-CAM needs the image branch (vision.image_branch: true)")

    def explain_reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        swap = self.config.vision.release_input
        if self.clip_vit is not None:
            grid = self.clip_vit.grid_size

            def tokens_to_map(activation: torch.Tensor) -> torch.Tensor:
                patches = activation[:, 1:]  # drop CLS
                fmap = patches.reshape(patches.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)
                return fmap.transpose(-1, -2) if swap else fmap

            return tokens_to_map
        if self.cvit is not None and swap:
            return lambda activation: activation.transpose(-1, -2)
        if self.cvit is None:
            raise NotImplementedError("Grad-CAM needs the image branch (vision.image_branch: true)")
        return None
