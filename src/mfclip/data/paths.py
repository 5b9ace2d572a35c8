"""File names as the file system gives them: validity and printable text."""

from __future__ import annotations

import os


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as printable text: bytes that are not valid UTF-8 appear as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def has_valid_name(name: str | os.PathLike[str]) -> bool:
    """Whether a name decoded from the file system is valid UTF-8 (holds no surrogate escapes)."""
    try:
        os.fspath(name).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
