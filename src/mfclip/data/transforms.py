"""Image → model input: resize to the model's square input and, for training, augmentation.

:meth:`ImageTransform.for_model` is the one builder every entry point uses: it reads the model's input
contract (``model.config.image_size`` and ``model.config.input``, see :mod:`mfclip.inputs`), so training,
validation, evaluation, the Detector, the server, explanations and exports all resize alike.

No normalisation happens here: every model takes RGB floats in ``[0, 1]`` and normalises internally
(CLIP mean/std, SRM scaling), so datasets, the detector and the server all feed the same thing.

Order of the training-time steps (each drawn with its own probability from a seeded generator):
resize to the input size → horizontal flip → colour jitter → downscale-and-upscale → Gaussian blur →
Gaussian noise → JPEG re-compression (last, as a re-shared image would be). Every step is also a public
function, so robustness evaluation can apply one degradation at a fixed strength.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from pydantic import Field, model_validator

from mfclip.inputs import InputConfig, Interpolation, ResizeMode, input_contract
from mfclip.utils.config import StrictConfig

Probability = Annotated[float, Field(ge=0.0, le=1.0)]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class AugmentConfig(StrictConfig):
    """Training-time augmentation; each ``*_p`` is the probability that the step runs on an image.

    Ranges are ``[low, high]`` and sampled uniformly. The defaults are mild: flips, and occasional JPEG
    and blur, the degradations a detector meets in the wild; colour jitter, downscaling and noise are off.
    """

    enabled: bool = True
    hflip_p: Probability = 0.5
    jpeg_p: Probability = 0.1
    jpeg_quality: tuple[int, int] = (30, 100)
    blur_p: Probability = 0.1
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    color_jitter_p: Probability = 0.0
    brightness: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    contrast: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    saturation: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    hue: Annotated[float, Field(ge=0.0, le=0.5)] = 0.02
    downscale_p: Probability = 0.0
    downscale_range: tuple[float, float] = (0.5, 1.0)
    noise_p: Probability = 0.0
    noise_std: tuple[float, float] = (0.0, 0.03)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentConfig:
        checks = {
            "jpeg_quality": (self.jpeg_quality, 1, 100),
            "blur_sigma": (self.blur_sigma, 0.0, 50.0),
            "downscale_range": (self.downscale_range, 1e-3, 1.0),
            "noise_std": (self.noise_std, 0.0, 1.0),
        }
        for name, ((low, high), lowest, highest) in checks.items():
            if not lowest <= low <= high <= highest:
                raise ValueError(
                    f"{name} must be [low, high] with {lowest} <= low <= high <= {highest}, got {[low, high]}"
                )
        return self

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(enabled=False)


class TransformConfig(StrictConfig):
    """How an image becomes the model's ``S x S`` input.

    ``resize`` and ``interpolation`` are the model's input contract (:class:`mfclip.inputs.InputConfig`;
    build this from a model with :meth:`ImageTransform.for_model`). ``jpeg_draft`` decodes large JPEGs at
    a reduced scale first (faster, slightly different pixels). ``augment`` applies only to training
    datasets.
    """

    resize: ResizeMode = "shorter_side_center_crop"
    interpolation: Interpolation = "bicubic"
    jpeg_draft: bool = False
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


# --------------------------------------------------------------------------------------------------
# Single steps


def resize_to_input(
    image: Image.Image,
    size: int,
    mode: ResizeMode = "shorter_side_center_crop",
    interpolation: Interpolation = "bicubic",
) -> Image.Image:
    """Scale (and for ``shorter_side_center_crop`` centre-crop) ``image`` to ``size x size``."""
    resample = _RESAMPLE[interpolation]
    width, height = image.size
    if mode == "direct":
        return image if (width, height) == (size, size) else image.resize((size, size), resample)
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if (new_w, new_h) != (size, size):
        image = image.crop((left, top, left + size, top + size))
    return image


def hflip(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def jpeg_recompress(image: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at ``quality`` (1-100, 4:2:0 chroma subsampling) and decode again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def gaussian_blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return image if sigma <= 0 else image.filter(ImageFilter.GaussianBlur(radius=float(sigma)))


def downscale(image: Image.Image, factor: float, interpolation: Interpolation = "bilinear") -> Image.Image:
    """Scale by ``factor`` (< 1) and back to the original size: a lower-resolution copy of the image."""
    if factor >= 1.0:
        return image
    width, height = image.size
    small = image.resize(
        (max(1, round(width * factor)), max(1, round(height * factor))), _RESAMPLE[interpolation]
    )
    return small.resize((width, height), _RESAMPLE[interpolation])


def color_jitter(
    image: Image.Image, brightness: float, contrast: float, saturation: float, hue: float
) -> Image.Image:
    """Multiply brightness, contrast and saturation by the given factors (1 = unchanged); shift hue by
    ``hue`` turns (−0.5…0.5)."""
    if brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(brightness)
    if contrast != 1.0:
        image = ImageEnhance.Contrast(image).enhance(contrast)
    if saturation != 1.0:
        image = ImageEnhance.Color(image).enhance(saturation)
    if hue != 0.0:
        h, s, v = image.convert("HSV").split()
        shift = round(hue * 255) % 256
        h = Image.fromarray((np.asarray(h, dtype=np.uint8) + np.uint8(shift)).astype(np.uint8), mode="L")
        image = Image.merge("HSV", (h, s, v)).convert("RGB")
    return image


def add_gaussian_noise(image: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    """Add zero-mean Gaussian noise of standard deviation ``std`` (in [0, 1] units), clipped, 8-bit."""
    if std <= 0:
        return image
    array = np.asarray(image, dtype=np.float32)
    noisy = array + rng.standard_normal(array.shape, dtype=np.float32) * np.float32(std * 255.0)
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB ``PIL`` image → float32 tensor (3, H, W) in ``[0, 1]``."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


# --------------------------------------------------------------------------------------------------
# The composed transform


class ImageTransform:
    """Callable ``(PIL image, rng) -> (3, S, S)`` float tensor in ``[0, 1]``; augments when ``train``."""

    def __init__(self, image_size: int, config: TransformConfig | None = None, train: bool = False) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)
        self.config = config or TransformConfig()
        self.train = train

    @classmethod
    def for_model(
        cls,
        model: Any,
        *,
        train: bool = False,
        augment: AugmentConfig | None = None,
        jpeg_draft: bool = False,
    ) -> ImageTransform:
        """The transform of a model's input contract (a detector model, or its config).

        ``train`` turns on ``augment`` (default :class:`AugmentConfig`); evaluation and scoring use
        ``train=False``. Raises ValueError when the model's config declares no input contract.
        """
        size, contract = input_contract(model)
        return cls.from_contract(size, contract, train=train, augment=augment, jpeg_draft=jpeg_draft)

    @classmethod
    def from_contract(
        cls,
        image_size: int,
        contract: InputConfig,
        *,
        train: bool = False,
        augment: AugmentConfig | None = None,
        jpeg_draft: bool = False,
    ) -> ImageTransform:
        """The transform of an input contract recorded elsewhere (e.g. in an exported model's metadata)."""
        config = TransformConfig(
            resize=contract.resize,
            interpolation=contract.interpolation,
            jpeg_draft=jpeg_draft,
            augment=augment if augment is not None else AugmentConfig(),
        )
        return cls(image_size, config, train=train)

    @property
    def augments(self) -> bool:
        return self.train and self.config.augment.enabled

    @property
    def draft_size(self) -> tuple[int, int] | None:
        return (self.image_size, self.image_size) if self.config.jpeg_draft else None

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        image = resize_to_input(image, self.image_size, self.config.resize, self.config.interpolation)
        if self.augments:
            if rng is None:
                raise ValueError("a training transform needs a random generator (rng)")
            image = self.augment(image, rng)
        return to_tensor(image)

    def augment(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The training-time steps on an already resized image."""
        aug = self.config.augment
        if rng.random() < aug.hflip_p:
            image = hflip(image)
        if rng.random() < aug.color_jitter_p:
            image = color_jitter(
                image,
                float(rng.uniform(1 - aug.brightness, 1 + aug.brightness)),
                float(rng.uniform(1 - aug.contrast, 1 + aug.contrast)),
                float(rng.uniform(1 - aug.saturation, 1 + aug.saturation)),
                float(rng.uniform(-aug.hue, aug.hue)),
            )
        if rng.random() < aug.downscale_p:
            image = downscale(image, float(rng.uniform(*aug.downscale_range)))
        if rng.random() < aug.blur_p:
            image = gaussian_blur(image, float(rng.uniform(*aug.blur_sigma)))
        if rng.random() < aug.noise_p:
            image = add_gaussian_noise(image, float(rng.uniform(*aug.noise_std)), rng)
        if rng.random() < aug.jpeg_p:
            low, high = aug.jpeg_quality
            image = jpeg_recompress(image, int(rng.integers(low, high + 1)))
        return image

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, train={self.train}, config={self.config!r})"
