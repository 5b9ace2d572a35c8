"""What an uploaded file is, decided by its first bytes, never by its name or declared content type."""

from __future__ import annotations

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
