"""The camera model of "real" synthetic photos and the final stage every image goes through.

``capture`` turns a rendered scene into what a camera records: lens blur, a Bayer (RGGB) colour filter
array, sensor shot and read noise, bilinear demosaicing and white balance. ``finish`` is shared by real
and fake images alike: mild sharpening, 8-bit quantisation and baseline JPEG at a random quality, so the
file format, size and compression never tell real from fake.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mfclip.data.synth.imageops import gaussian_blur, separable_filter, unsharp_mask

JPEG_QUALITY_RANGE = (70, 95)  # inclusive
SHARPEN_RANGE = (0.0, 0.6)
_RB_TAPS = np.array([0.5, 1.0, 0.5], dtype=np.float32)


@dataclass(frozen=True)
class CameraSettings:
    blur_sigma: float
    shot_gain: float
    read_sigma: float
    white_balance: tuple[float, float, float]


def sample_camera(rng: np.random.Generator) -> CameraSettings:
    """Random lens blur, ISO-like noise level and white-balance error for one photo."""
    return CameraSettings(
        blur_sigma=float(rng.uniform(0.3, 0.9)),
        shot_gain=float(np.exp(rng.uniform(np.log(1.5e-4), np.log(4e-3)))),
        read_sigma=float(np.exp(rng.uniform(np.log(1e-3), np.log(6e-3)))),
        white_balance=tuple(float(g) for g in rng.uniform(0.97, 1.03, size=3)),  # type: ignore[arg-type]
    )


def bayer_masks(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean RGGB colour-filter masks ``(red, green, blue)``."""
    rows = np.arange(height)[:, None] % 2
    cols = np.arange(width)[None, :] % 2
    red = (rows == 0) & (cols == 0)
    blue = (rows == 1) & (cols == 1)
    return red, ~(red | blue), blue


def demosaic_bilinear(raw: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing of an RGGB mosaic ``(H, W)`` → ``(H, W, 3)``."""
    h, w = raw.shape
    red, green, blue = bayer_masks(h, w)
    out = np.empty((h, w, 3), dtype=np.float32)
    # Reflect padding keeps the colour-filter parity at the borders.
    out[..., 0] = separable_filter(raw * red, _RB_TAPS)
    out[..., 2] = separable_filter(raw * blue, _RB_TAPS)
    g = np.pad(raw * green, 1, mode="reflect")
    out[..., 1] = g[1:-1, 1:-1] + np.float32(0.25) * (g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:])
    return out


def capture(
    scene: np.ndarray, rng: np.random.Generator, settings: CameraSettings | None = None
) -> np.ndarray:
    """Photograph a rendered scene: float32 RGB in ``[0, 1]`` (display-referred) in and out."""
    settings = settings or sample_camera(rng)
    h, w, _ = scene.shape
    optics = gaussian_blur(scene, settings.blur_sigma)
    linear = optics * optics  # display → approximately linear light (gamma 2)
    red, green, blue = bayer_masks(h, w)
    raw = linear[..., 0] * red + linear[..., 1] * green + linear[..., 2] * blue
    raw = raw.astype(np.float32)
    sigma = np.sqrt(np.float32(settings.shot_gain) * raw + np.float32(settings.read_sigma**2))
    raw = raw + sigma * rng.standard_normal(raw.shape, dtype=np.float32)
    rgb = demosaic_bilinear(raw) * np.asarray(settings.white_balance, dtype=np.float32)
    return np.sqrt(np.clip(rgb, 0.0, 1.0))


def finish(image: np.ndarray, rng: np.random.Generator) -> tuple[bytes, int]:
    """Sharpen, quantise and JPEG-encode (fixed encoder settings); returns ``(jpeg_bytes, quality)``."""
    amount = float(rng.uniform(*SHARPEN_RANGE))
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    sharpened = unsharp_mask(image, amount)
    pixels = np.clip(np.rint(sharpened * np.float32(255.0)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False
    )
    return buffer.getvalue(), quality
