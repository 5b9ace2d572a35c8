"""Robust image decoding: any common file → an RGB ``PIL.Image``, or an :class:`ImageDecodeError`.

Handles EXIF orientation, palette / RGBA / LA / CMYK / 16-bit / grey images, and bounds what decoding
costs before any pixel is decoded: the header's pixel count (``max_pixels``) and, optionally, the bytes
the decoded pixels will take (``max_decoded_bytes``; JPEGs above it decode at a reduced DCT scale when one
fits). Conversions of high-bit-depth images work on bounded row bands, never on a widened copy of the
whole image, and decoding can be interrupted between reads and bands (``interrupt``).
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

# 64 megapixels by default: far above any face dataset, far below what would exhaust memory.
DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# Pixels converted at a time from 16-bit, 32-bit and float images (keeps temporaries to a few MB).
_BAND_PIXELS = 1 << 20
_EXIF_ORIENTATION = 0x0112
# round(v * 255 / 65535) for every 16-bit value, in integers: (v * 255 + 32767) // 65535.
_SIXTEEN_TO_EIGHT_BIT = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
_JPEG_SCALES = (1, 2, 4, 8)  # the reductions libjpeg can decode at directly


class ImageDecodeError(ValueError):
    """A file could not be decoded as an image; ``source`` names it and ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ImageHeaderError(ImageDecodeError):
    """The header could not be read: no known format (``detail`` empty) or a corrupt header (``detail``)."""

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        super().__init__(source, reason)
        self.detail = detail


class ImageTooLargeError(ImageDecodeError):
    """An image is above the pixel or decoded-size limit; decided from its header, before decoding."""


class DecodeInterrupted(Exception):
    """Decoding stopped because its ``interrupt`` event was set (whoever wanted the image is gone)."""


def is_image_path(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def bomb_pixels(error: Exception) -> int | None:
    """The pixel count stated in Pillow's ``DecompressionBombError`` message, when it gives one."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else None


def describe_error(exc: BaseException) -> str:
    """An exception's message on one line, without the object reprs (``<... at 0x...>``) Pillow puts in."""
    return " ".join(re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).split())


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """Bytes the pixels of an image of ``size`` and ``mode`` take once decoded: pixels x bands x bytes per
    sample (RGB 3, RGBA 4, 8-bit grey or palette 1, 16-bit grey 2, 32-bit or float grey 4)."""
    described = ImageMode.getmode(mode)
    sample_bytes = int(described.typestr[-1])
    return size[0] * size[1] * len(described.bands) * sample_bytes


class _InterruptibleBytes(io.BytesIO):
    """Bytes that stop being readable once ``interrupt`` is set (Pillow decodes while it reads)."""

    def __init__(self, data: bytes, interrupt: threading.Event, label: str) -> None:
        super().__init__(data)
        self._interrupt = interrupt
        self._label = label

    def read(self, size: int | None = -1) -> bytes:
        if self._interrupt.is_set():
            raise DecodeInterrupted(f"{self._label}: decoding interrupted")
        return super().read(size)


def _open_unchecked(fp: IO[bytes]) -> Image.Image:
    """``Image.open`` without Pillow's own pixel-count check, for callers that apply a limit of their own.

    Pillow warns (DecompressionBombWarning) above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that
    before the caller can see the size; a caller whose own, lower limit refuses the image anyway should
    neither print the warning nor lose the size it states. This tries the registered format plugins as
    ``Image.open`` does; were that registry ever unavailable, it falls back to ``Image.open``.
    """
    try:
        Image.preinit()
        prefix = fp.read(16)
        for loader in (None, Image.init):  # the common plugins first, then every plugin
            if loader is not None:
                loader()
            for format_id in list(Image.ID):
                factory, accept = Image.OPEN[format_id]
                if accept is not None and accept(prefix) is not True:
                    continue
                fp.seek(0)
                try:
                    return factory(fp, "")
                except (SyntaxError, IndexError, TypeError, struct.error):
                    continue  # not this format after all (as in Image.open)
    except AttributeError:  # pragma: no cover - a Pillow without the plugin registry
        fp.seek(0)
        return Image.open(fp)
    raise UnidentifiedImageError("cannot identify image file")


def _jpeg_scale_within(size: tuple[int, int], mode: str, max_bytes: int, min_side: int) -> int | None:
    """The smallest JPEG DCT reduction whose decoded size fits ``max_bytes`` and keeps the shorter side at
    least ``min_side``, or None when none does."""
    for scale in _JPEG_SCALES:
        scaled = (-(-size[0] // scale), -(-size[1] // scale))
        if min(scaled) < min_side:
            return None
        if decoded_bytes(scaled, mode) <= max_bytes:
            return scale
    return None


class OpenedImage:
    """An image whose header is read and checked against the limits; :meth:`decode` decodes it."""

    def __init__(self, image: Image.Image, label: str, interrupt: threading.Event | None) -> None:
        self._image = image
        self.name = label
        self.format: str | None = image.format
        self.interrupt = interrupt

    @property
    def size(self) -> tuple[int, int]:
        """Width and height as they will decode (after any JPEG reduction)."""
        return self._image.size

    @property
    def mode(self) -> str:
        return self._image.mode

    @property
    def decoded_bytes(self) -> int:
        """What decoding will cost: see :func:`decoded_bytes`."""
        return decoded_bytes(self.size, self.mode)

    def decode(self) -> Image.Image:
        """Decode into an 8-bit RGB image (:class:`ImageDecodeError` naming the file if it is corrupt)."""
        if self.interrupt is not None and self.interrupt.is_set():
            raise DecodeInterrupted(f"{self.name}: decoding interrupted")
        return to_rgb(self._image, self.name, interrupt=self.interrupt)


def open_image(
    source: str | Path | bytes | io.IOBase,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_decoded_bytes: int | None = None,
    draft_size: tuple[int, int] | None = None,
    name: str | None = None,
    interrupt: threading.Event | None = None,
) -> OpenedImage:
    """Read the header of ``source`` (a path, bytes or a binary file object) and check the limits.

    Raises :class:`ImageDecodeError` naming the file for zero-byte, truncated or non-image input and
    :class:`ImageTooLargeError` for an image of more than ``max_pixels`` pixels or, when no JPEG reduction
    brings it under, more than ``max_decoded_bytes`` decoded bytes. ``draft_size`` lets JPEG files decode
    at a reduced DCT scale (1/2, 1/4 or 1/8) that stays at least that large. With ``interrupt``, reading
    and converting stop with :class:`DecodeInterrupted` once the event is set.
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
    fp: IO[bytes]
    if isinstance(data, (bytes, bytearray)):
        if len(data) == 0:
            raise ImageDecodeError(label, "empty file (0 bytes)")
        fp = _InterruptibleBytes(bytes(data), interrupt, label) if interrupt is not None else io.BytesIO(data)
    else:
        fp = data  # type: ignore[assignment]
    try:
        # With a limit of our own, Pillow's (higher) one neither warns nor hides the size from the message.
        image = _open_unchecked(fp) if max_pixels is not None else Image.open(fp)
    except UnidentifiedImageError:
        raise ImageHeaderError(label, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        pixels = bomb_pixels(exc)
        size = f"image is {pixels} pixels" if pixels is not None else "image is too large"
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageTooLargeError(
            label, f"{size}, above the limit {limit} (possible decompression bomb)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        detail = describe_error(exc)
        raise ImageHeaderError(label, f"corrupt or truncated image ({detail})", detail) from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            label, f"image is {width}x{height} = {width * height} pixels, above the limit {max_pixels}"
        )
    _reduce_jpeg(image, label, max_decoded_bytes, draft_size)
    return OpenedImage(image, label, interrupt)


def _reduce_jpeg(
    image: Image.Image, label: str, max_bytes: int | None, draft_size: tuple[int, int] | None
) -> None:
    """Apply the JPEG reduction asked for (``draft_size``) or needed to fit ``max_bytes``; refuse an image
    that stays above ``max_bytes``."""
    full = decoded_bytes(image.size, image.mode)
    jpeg = image.format in ("JPEG", "MPO")
    scale = 1
    if jpeg and draft_size is not None:
        ratio = min(image.size[0] // max(draft_size[0], 1), image.size[1] // max(draft_size[1], 1))
        scale = max(s for s in _JPEG_SCALES if s <= max(ratio, 1))
    if max_bytes is not None and full > max_bytes:
        min_side = min(draft_size) if draft_size is not None else 1
        fitting = _jpeg_scale_within(image.size, image.mode, max_bytes, min_side) if jpeg else None
        if fitting is None:
            width, height = image.size
            raise ImageTooLargeError(
                label,
                f"image is {width}x{height} {image.mode}, {full / 2**20:.1f} MiB decoded, above the limit "
                f"of {max_bytes / 2**20:g} MiB",
            )
        scale = max(scale, fitting)
    if scale > 1:
        image.draft(image.mode, (image.size[0] // scale, image.size[1] // scale))


def load_image(
    source: str | Path | bytes | io.IOBase,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    draft_size: tuple[int, int] | None = None,
    *,
    max_decoded_bytes: int | None = None,
    interrupt: threading.Event | None = None,
) -> Image.Image:
    """Decode ``source`` (a path, bytes or a binary file object) into an RGB image.

    Raises :class:`ImageDecodeError` naming the file for zero-byte, truncated, non-image or oversized
    input (see :func:`open_image` for the limits and ``draft_size``: JPEG decoding at a reduced scale is
    much faster for large photos, but the pixels differ slightly from a full decode followed by
    resizing). Safe to call from several threads at once.
    """
    opened = open_image(
        source,
        max_pixels=max_pixels,
        max_decoded_bytes=max_decoded_bytes,
        draft_size=draft_size,
        name=name,
        interrupt=interrupt,
    )
    return opened.decode()


def _bands(image: Image.Image, interrupt: threading.Event | None, label: str) -> Iterator[np.ndarray]:
    """The image's pixels as 2-D numpy arrays of a few rows each, in its own sample type."""
    width, height = image.size
    rows = max(1, _BAND_PIXELS // max(width, 1))
    dtype = np.dtype(ImageMode.getmode(image.mode).typestr)
    for top in range(0, height, rows):
        if interrupt is not None and interrupt.is_set():
            raise DecodeInterrupted(f"{label}: decoding interrupted")
        bottom = min(top + rows, height)
        band = image.crop((0, top, width, bottom)).tobytes()
        yield np.frombuffer(band, dtype=dtype).reshape(bottom - top, width)


def _to_grey8(image: Image.Image, interrupt: threading.Event | None, label: str) -> Image.Image:
    """16-bit, 32-bit integer or float grey → 8-bit grey, band by band (no full-size temporaries).

    16-bit images map 0..65535 onto 0..255 with rounding; 32-bit integer images do too when they hold
    values above 255 and are clipped to 0..255 otherwise; float images in [0, 1] are scaled by 255.
    """
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    _, high = image.getextrema() if image.mode in ("I", "F") else (0, 65535)
    top = 0
    if image.mode == "F":
        scale = np.float32(255.0 if high <= 1.0 else 1.0)
        for band in _bands(image, interrupt, label):
            scaled = np.nan_to_num(band, nan=0.0) * scale + np.float32(0.5)
            out[top : top + band.shape[0]] = np.clip(scaled, 0.0, 255.0).astype(np.uint8)
            top += band.shape[0]
    else:
        sixteen_bit = image.mode.startswith("I;16") or high > 255
        for band in _bands(image, interrupt, label):
            if sixteen_bit:  # mode="clip" also clips 32-bit values to 0..65535 first
                np.take(_SIXTEEN_TO_EIGHT_BIT, band, out=out[top : top + band.shape[0]], mode="clip")
            else:
                out[top : top + band.shape[0]] = np.clip(band, 0, 255)
            top += band.shape[0]
    return Image.fromarray(out, mode="L")


def to_rgb(
    image: Image.Image, label: str = "<image>", interrupt: threading.Event | None = None
) -> Image.Image:
    """Apply EXIF orientation and convert any mode to 8-bit RGB (alpha composited on black)."""
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(label, describe_error(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(label, f"corrupt or truncated image ({describe_error(exc)})") from None
    # A malformed EXIF block must not lose an otherwise good image.
    with contextlib.suppress(Exception):
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_grey8(image, interrupt, label).convert("RGB")
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
