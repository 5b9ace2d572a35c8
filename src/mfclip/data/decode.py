"""Robust image decoding: any common file → an RGB ``PIL.Image``, or an :class:`ImageDecodeError`.

Handles EXIF orientation, palette / RGBA / LA / CMYK / 16-bit / grey images, and refuses images above
a pixel-count limit before decoding them (decompression bombs).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 64 megapixels by default: far above any face dataset, far below what would exhaust memory.
DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


class ImageDecodeError(ValueError):
    """A file could not be decoded as an image; ``source`` names it and ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def is_image_path(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def bomb_pixels(error: Exception) -> int | None:
    """The pixel count stated in Pillow's ``DecompressionBombError`` message, when it gives one."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else None


def load_image(
    source: str | Path | bytes | io.IOBase,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``source`` (a path, bytes or a binary file object) into an RGB image.

    Raises :class:`ImageDecodeError` naming the file for zero-byte, truncated, non-image or oversized
    input. ``draft_size`` lets JPEG files decode at a reduced scale (DCT scaling by 1/2, 1/4 or 1/8) that
    stays at least that large: much faster for large photos, but the pixels differ slightly from a full
    decode followed by resizing. Safe to call from several threads at once.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<bytes>")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageDecodeError(label, "file not found")
        if path.is_dir():
            raise ImageDecodeError(label, "is a directory, not an image")
        if path.stat().st_size == 0:
            raise ImageDecodeError(label, "empty file (0 bytes)")
        data: bytes | io.IOBase = path.read_bytes()
    else:
        data = source
    if isinstance(data, (bytes, bytearray)):
        if len(data) == 0:
            raise ImageDecodeError(label, "empty file (0 bytes)")
        data = io.BytesIO(data)
    # The size is checked against ``max_pixels`` before any pixel is decoded; PIL's own bomb check stays as
    # a backstop. (No warnings.catch_warnings here: it mutates global state and is not thread-safe.)
    try:
        image = Image.open(data)
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            pixels = width * height
            raise ImageDecodeError(
                label, f"image is {width}x{height} = {pixels} pixels, above the limit {max_pixels}"
            )
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses images above twice its own limit before our check can see the size.
        pixels = bomb_pixels(exc)
        size = f"image is {pixels} pixels" if pixels is not None else "image is too large"
        limit = min(max_pixels or 2**63, 2 * (Image.MAX_IMAGE_PIXELS or 0))
        message = f"{size}, above the limit {limit} (possible decompression bomb)"
        raise ImageDecodeError(label, message) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(label, f"corrupt or truncated image ({exc})") from None
    return to_rgb(image, label)


def to_rgb(image: Image.Image, label: str = "<image>") -> Image.Image:
    """Apply EXIF orientation and convert any mode to 8-bit RGB (alpha composited on black)."""
    # A malformed EXIF block must not lose an otherwise good image.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        grey = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        grey = np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(label, f"unsupported image mode {mode!r} ({exc})") from None


def load_image_array(source: str | Path | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to an HxWx3 uint8 RGB array."""
    return np.asarray(load_image(source, max_pixels=max_pixels))
