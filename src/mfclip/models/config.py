"""Typed configuration of the MFCLIP model (``type: mfclip``).

Every switch of the architecture and of its losses is a field here, and every preset under
``configs/models/`` is an instance of :class:`ModelConfig`. The defaults are the paper-intent model
(``mfclip-vit-b16``); the released code's behaviours are reachable through the options named in
``docs/model.md``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mfclip.inputs import InputConfig
from mfclip.prompts import NUM_LEVELS
from mfclip.utils.config import ConfigError, StrictConfig

# Hyper-parameters an open_clip ViT config provides, and their reference values (ViT-B/16).
_VIT_FIELDS = ("width", "layers", "heads", "patch_size", "mlp_ratio")


def _open_clip_arch_config(arch: str, field: str) -> dict[str, Any]:
    """open_clip's bundled model config named ``arch``; ``field`` names the setting in errors."""
    import open_clip

    arch_cfg = open_clip.get_model_config(arch)
    if arch_cfg is None:
        raise ConfigError(f"{field}: unknown open_clip model config {arch!r}")
    return arch_cfg


class ClipViTConfig(StrictConfig):
    """The ``clip_vit`` global branch: an open_clip ``VisionTransformer``.

    ``arch`` names an open_clip model config (``ViT-B-16``, ``ViT-L-14``, ...) whose vision tower
    hyper-parameters are used; any field set here overrides it. With ``arch: null`` every size field
    must be given. The tower's output dimension is the model's ``embed_dim`` and its input size the
    model's ``image_size``.
    """

    arch: str | None = "ViT-B-16"
    width: int | None = Field(default=None, gt=0)
    layers: int | None = Field(default=None, gt=0)
    heads: int | None = Field(default=None, gt=0)
    patch_size: int | None = Field(default=None, gt=0)
    mlp_ratio: float | None = Field(default=None, gt=0)
    quick_gelu: bool | None = None  # None: as the arch says (OpenAI weights were trained with QuickGELU)

    @model_validator(mode="after")
    def _sizes_known(self) -> ClipViTConfig:
        if self.arch is None:
            missing = [f for f in _VIT_FIELDS if f != "mlp_ratio" and getattr(self, f) is None]
            if missing:
                raise ValueError(f"with arch: null, set {', '.join(missing)}")
        return self

    def resolved(self) -> dict[str, Any]:
        """The tower's hyper-parameters: the open_clip arch's values overridden by the fields set here."""
        values: dict[str, Any] = {"mlp_ratio": 4.0, "quick_gelu": False}
        if self.arch is not None:
            arch_cfg = _open_clip_arch_config(self.arch, "vision.clip_vit.arch")
            vision = dict(arch_cfg.get("vision_cfg", {}))
            if vision.get("timm_model_name"):
                raise ConfigError(
                    f"vision.clip_vit.arch: {self.arch!r} uses a timm image tower, which clip_vit does not "
                    "support; use a native open_clip ViT config such as ViT-B-16"
                )
            if not isinstance(vision.get("layers", 12), int):
                raise ConfigError(
                    f"vision.clip_vit.arch: {self.arch!r} has a ResNet image tower, which clip_vit does not "
                    "support; use a native open_clip ViT config such as ViT-B-16"
                )
            width = int(vision.get("width", 768))
            values.update(
                width=width,
                layers=int(vision.get("layers", 12)),
                heads=width // int(vision.get("head_width", 64)),
                patch_size=int(vision.get("patch_size", 16)),
                mlp_ratio=float(vision.get("mlp_ratio", 4.0)),
                quick_gelu=bool(arch_cfg.get("quick_gelu", False)),
            )
            for key in ("ls_init_value", "no_ln_pre", "pool_type", "final_ln_after_pool", "pos_embed_type"):
                if key in vision:
                    values[key] = vision[key]
        for key in (*_VIT_FIELDS, "quick_gelu"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        if values["width"] % values["heads"]:
            raise ConfigError(
                f"vision.clip_vit: width {values['width']} is not divisible by heads {values['heads']}"
            )
        return values


class TokenEncoderConfig(StrictConfig):
    """A VGG-style CNN whose feature map becomes one token, then a CLS token and a pre-norm transformer."""

    channels: list[int]
    convs_per_block: list[int]
    width: int = Field(default=512, gt=0)
    layers: int = Field(default=6, ge=0)
    heads: int = Field(default=8, gt=0)
    mlp_dim: int = Field(default=2048, gt=0)
    # Released quirks: positional embeddings indexed by the sample's batch position (caps the batch at
    # max_batch), and attention scaled by model_dim^-0.5 instead of head_dim^-0.5.
    batch_position_embedding: bool = False
    max_batch: int = Field(default=24, gt=0)
    attention_scale: Literal["head_dim", "model_dim"] = "head_dim"

    @model_validator(mode="after")
    def _consistent(self) -> TokenEncoderConfig:
        if not self.channels or len(self.channels) != len(self.convs_per_block):
            raise ValueError("channels and convs_per_block must be non-empty lists of the same length")
        if any(c <= 0 for c in self.channels) or any(n <= 0 for n in self.convs_per_block):
            raise ValueError("channels and convs_per_block must be positive")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self

    @property
    def downsampling(self) -> int:
        """How much the CNN shrinks each side (every block ends in a 2×2 max-pool)."""
        return 2 ** len(self.channels)


class CViTConfig(TokenEncoderConfig):
    """The ``cvit`` global branch: the released VGG-style CNN-transformer, trained from scratch."""

    channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 512])
    convs_per_block: list[int] = Field(default_factory=lambda: [3, 3, 3, 4, 4])
    layers: int = Field(default=6, ge=0)


class NoiseBranchConfig(TokenEncoderConfig):
    """Richest patch → SRM residual → the first two VGG blocks → one token → CLS → transformer."""

    channels: list[int] = Field(default_factory=lambda: [32, 64])
    convs_per_block: list[int] = Field(default_factory=lambda: [3, 3])
    layers: int = Field(default=3, ge=0)
    grid: int = Field(default=2, gt=0)  # the image is split into grid × grid patches
    # richest: lowest GLCM homogeneity; random: a random patch; whole: the whole image; an int: that patch
    patch_mode: Literal["richest", "random", "whole"] | int = "richest"
    srm_input_scale: Literal["unit", "byte"] = "unit"  # released: [0, 1] input to the SRM filters

    @field_validator("patch_mode")
    @classmethod
    def _patch_index(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 0:
            raise ValueError("a fixed patch index must be >= 0")
        return value


class VisionConfig(StrictConfig):
    """The multi-modal vision encoder (MVE)."""

    global_branch: Literal["clip_vit", "cvit"] = "clip_vit"
    image_branch: bool = True
    noise_branch: bool = True
    fusion: Literal["sum", "concat"] = "sum"
    # Input normalisation of the global branch ("clip": CLIP mean/std; "none": the [0, 1] image as is).
    normalize: Literal["clip", "none"] = "clip"
    # Released quirk: the global branch sees 0–255 unnormalised pixels with height and width swapped.
    release_input: bool = False
    clip_vit: ClipViTConfig = Field(default_factory=ClipViTConfig)
    cvit: CViTConfig = Field(default_factory=CViTConfig)
    noise: NoiseBranchConfig = Field(default_factory=NoiseBranchConfig)

    @model_validator(mode="after")
    def _one_branch(self) -> VisionConfig:
        if not (self.image_branch or self.noise_branch):
            raise ValueError("at least one of image_branch and noise_branch must be on")
        return self


class TextConfig(StrictConfig):
    """The fine-grained language encoder (FLE): an open_clip ``TextTransformer`` and its pooling."""

    arch: str | None = "ViT-B-16"  # open_clip model config whose text tower sizes are used
    width: int | None = Field(default=None, gt=0)
    layers: int | None = Field(default=None, gt=0)
    heads: int | None = Field(default=None, gt=0)
    mlp_ratio: float | None = Field(default=None, gt=0)
    quick_gelu: bool | None = None
    pooling: Literal["per_level", "concat_last", "concat_first"] = "per_level"
    level_fusion: Literal["mean", "learned"] = "mean"  # per_level only
    levels: list[int] = Field(default_factory=lambda: list(range(1, NUM_LEVELS + 1)))
    # concat modes: "tiled" reuses the tower's 77 positions for every level plus a learned per-level
    # offset (so pretrained CLIP positions carry over); "independent" is the released newly
    # initialised 308-position embedding.
    concat_positions: Literal["tiled", "independent"] = "tiled"
    freeze: bool = False  # keep the text tower fixed (its prompt features are then cached)

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("levels must name at least one prompt level")
        bad = [v for v in value if not 1 <= v <= NUM_LEVELS]
        if bad:
            raise ValueError(f"levels must lie in 1..{NUM_LEVELS}, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"levels has duplicates: {value}")
        return sorted(value)

    @model_validator(mode="after")
    def _sizes_known(self) -> TextConfig:
        if self.arch is None:
            missing = [f for f in ("width", "layers", "heads") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"with arch: null, set {', '.join(missing)}")
        return self

    def resolved(self) -> dict[str, Any]:
        """The tower's hyper-parameters: the open_clip arch's values overridden by the fields set here."""
        values: dict[str, Any] = {"mlp_ratio": 4.0, "quick_gelu": False}
        if self.arch is not None:
            arch_cfg = _open_clip_arch_config(self.arch, "text.arch")
            text = dict(arch_cfg.get("text_cfg", {}))
            if text.get("hf_model_name"):
                raise ConfigError(f"text.arch: {self.arch!r} has a Hugging Face text tower, not a CLIP one")
            values.update(
                width=int(text.get("width", 512)),
                layers=int(text.get("layers", 12)),
                heads=int(text.get("heads", 8)),
                mlp_ratio=float(text.get("mlp_ratio", 4.0)),
                quick_gelu=bool(arch_cfg.get("quick_gelu", False)),
            )
        for key in ("width", "layers", "heads", "mlp_ratio", "quick_gelu"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        if values["width"] % values["heads"]:
            raise ConfigError(f"text: width {values['width']} is not divisible by heads {values['heads']}")
        return values


class SPAConfig(StrictConfig):
    """Sample pair attention: how the B×B image–text logits are gated before ℓcmc."""

    mode: Literal["content", "matrix", "none"] = "content"
    init_gate: float = Field(default=0.5, gt=0.0, lt=1.0)  # every gate's value at initialisation
    hidden: int = Field(default=32, gt=0)  # content: hidden units of the gate MLP
    max_batch: int = Field(default=24, gt=0)  # matrix: size of the learnable gate matrix


class LossConfig(StrictConfig):
    """ce·ℓce + cmc·ℓcmc + kl·ℓkl; a weight of 0 switches a term off (and skips computing it)."""

    ce: float = Field(default=1.0, ge=0.0)
    cmc: float = Field(default=1.0, ge=0.0)
    kl: float = Field(default=1.0, ge=0.0)
    kl_temperature: float = Field(default=0.5, gt=0.0)
    kl_detach_text: bool = True  # the text distribution is a fixed target for ℓkl
    temperature_init: float = Field(default=0.07, gt=0.0)  # logit scale s starts at log(1/0.07)
    logit_scale_max: float = Field(default=100.0, gt=1.0)  # exp(s) is clamped here, as in CLIP
    learn_temperature: bool = True

    @model_validator(mode="after")
    def _one_term_on(self) -> LossConfig:
        if self.ce == 0 and self.cmc == 0 and self.kl == 0:
            raise ValueError("at least one of losses.ce, losses.cmc and losses.kl must be > 0")
        return self

    @property
    def uses_text(self) -> bool:
        return self.cmc > 0 or self.kl > 0

    @property
    def logit_scale_init(self) -> float:
        return math.log(1.0 / self.temperature_init)


class ModelConfig(StrictConfig):
    """The whole MFCLIP model. ``type`` selects the builder in the model registry."""

    type: Literal["mfclip"] = "mfclip"
    name: str | None = None
    description: str = ""
    image_size: int = Field(default=224, gt=0)
    input: InputConfig = Field(default_factory=InputConfig)  # how images become image_size inputs
    embed_dim: int = Field(default=512, gt=0)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    spa: SPAConfig = Field(default_factory=SPAConfig)
    losses: LossConfig = Field(default_factory=LossConfig)

    @model_validator(mode="after")
    def _sizes_fit(self) -> ModelConfig:
        size = self.image_size
        vision = self.vision
        if vision.image_branch and vision.global_branch == "cvit":
            down = vision.cvit.downsampling
            if size % down:
                raise ValueError(
                    f"image_size {size} is not divisible by {down}, the downsampling of vision.cvit's "
                    f"{len(vision.cvit.channels)} pooled blocks"
                )
        patch_size = vision.clip_vit.patch_size
        if vision.image_branch and vision.global_branch == "clip_vit" and patch_size and size % patch_size:
            raise ValueError(f"image_size {size} is not divisible by vision.clip_vit.patch_size {patch_size}")
        if vision.noise_branch:
            noise = vision.noise
            if noise.patch_mode != "whole":
                if size % noise.grid:
                    raise ValueError(
                        f"image_size {size} cannot be split into a {noise.grid}×{noise.grid} grid "
                        f"(vision.noise.grid)"
                    )
                if isinstance(noise.patch_mode, int) and noise.patch_mode >= noise.grid**2:
                    raise ValueError(
                        f"vision.noise.patch_mode {noise.patch_mode} is not a patch of a "
                        f"{noise.grid}×{noise.grid} grid"
                    )
            patch = self.noise_patch_size
            if patch % noise.downsampling:
                raise ValueError(
                    f"the noise patch size {patch} (image_size / vision.noise.grid) is not divisible by "
                    f"{noise.downsampling}, the downsampling of vision.noise's {len(noise.channels)} blocks"
                )
        return self

    @property
    def noise_patch_size(self) -> int:
        """Side of the patch the noise branch sees: image_size / grid (the whole image in ``whole`` mode)."""
        noise = self.vision.noise
        return self.image_size if noise.patch_mode == "whole" else self.image_size // noise.grid

    @property
    def uses_text(self) -> bool:
        return self.losses.uses_text
