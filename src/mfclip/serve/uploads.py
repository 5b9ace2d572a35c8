"""Uploaded files: what they are (decided by their first bytes, never by their name or declared content
type) and opening them under the service's limits, with the HTTP status of each way they can fail."""

from __future__ import annotations

import threading

from mfclip.data.decode import (
    ImageDecodeError,
    ImageHeaderError,
    ImageTooLargeError,
    OpenedImage,
    open_image,
)

# (format name, offset, magic bytes). WEBP also needs "WEBP" at offset 8 (checked below).
_IMAGE_SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("png", 0, b"\x89PNG\r\n\x1a\n"),
    ("jpeg", 0, b"\xff\xd8\xff"),
    ("gif", 0, b"GIF87a"),
    ("gif", 0, b"GIF89a"),
    ("bmp", 0, b"BM"),
    ("tiff", 0, b"II*\x00"),
    ("tiff", 0, b"MM\x00*"),
    ("webp", 0, b"RIFF"),
)

# Common non-image types, named in the error message so a client sees what it actually sent.
_OTHER_SIGNATURES: tuple[tuple[str, bytes], ...] = (
    ("PDF document", b"%PDF"),
    ("ZIP archive", b"PK\x03\x04"),
    ("gzip archive", b"\x1f\x8b"),
    ("Matroska/WebM video", b"\x1a\x45\xdf\xa3"),
    ("ELF executable", b"\x7fELF"),
    ("HTML document", b"<!DOCTYPE"),
    ("HTML document", b"<html"),
)

SUPPORTED_IMAGE_FORMATS = ("png", "jpeg", "gif", "bmp", "tiff", "webp")


def sniff_image_format(data: bytes) -> str | None:
    """The image format of ``data`` from its magic bytes, or None when it is not a supported image."""
    for name, offset, magic in _IMAGE_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if name == "webp" and data[8:12] != b"WEBP":
                continue
            return name
    return None


def describe_non_image(data: bytes) -> str:
    """A short human description of content that is not a supported image."""
    for name, magic in _OTHER_SIGNATURES:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return "MP4/MOV video"
    if data[:4] == b"RIFF":
        return "RIFF container (AVI/WAV)"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text"


class UploadError(Exception):
    """An upload that cannot be scored: the HTTP ``status`` of the reason and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def open_upload(
    data: bytes,
    filename: str | None,
    *,
    max_pixels: int,
    max_image_bytes: int,
    draft_size: tuple[int, int] | None = None,
    interrupt: threading.Event | None = None,
) -> OpenedImage:
    """Check an upload and read its image header: 400 empty, 415 not a supported image, 413 above the pixel
    or decoded-size limit, 422 undecodable header. Nothing is decoded yet."""
    name = filename or "<upload>"
    if not data:
        raise UploadError(400, f"{name}: empty file (0 bytes)")
    kind = sniff_image_format(data)
    if kind is None:
        raise UploadError(
            415,
            f"{name}: not a supported image (content looks like {describe_non_image(data)}); "
            f"send one of: {', '.join(SUPPORTED_IMAGE_FORMATS)}",
        )
    try:
        return open_image(
            data,
            max_pixels=max_pixels,
            max_decoded_bytes=max_image_bytes,
            draft_size=draft_size,
            name=name,
            interrupt=interrupt,
        )
    except ImageTooLargeError as exc:
        raise UploadError(413, str(exc)) from None
    except ImageHeaderError as exc:
        reason = f" (corrupt header: {exc.detail})" if exc.detail else ""
        raise UploadError(422, f"{name}: not a decodable {kind.upper()} image{reason}") from None
    except ImageDecodeError as exc:
        raise UploadError(422, str(exc)) from None
