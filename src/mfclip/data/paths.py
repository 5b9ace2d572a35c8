"""File names as the file system gives them, and the one set of rules for walking a folder tree.

Every scan of a user's folders (dataset importers, face preprocessing, ``predict``) lists folders with
:func:`list_folder` and :func:`walk`, so they all follow the same rules:

- entries come in sorted name order;
- hidden entries (names starting with ``.``: ``.DS_Store``, macOS ``._photo.jpg`` resource forks,
  ``.git/``) are not scanned;
- symbolic links are followed, to files and to folders, also outside the tree (datasets often live on
  other disks); every folder is scanned once, however many paths lead to it;
- a link whose target does not exist, a link that resolves back to itself, a link to a folder that
  contains it (a directory cycle), a second path to a folder scanned elsewhere, a folder that cannot be
  listed and a name that is not valid UTF-8 are not scanned either.

Whatever is not scanned is passed to the caller's ``on_skip(path, reason)`` with one of the reasons below,
so importers can list it (``MANIFEST.skipped.csv``) instead of dropping it silently.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Reasons passed to ``on_skip``.
HIDDEN = "hidden (name starts with '.')"
BROKEN_LINK = "broken symbolic link (its target does not exist)"
LINK_LOOP = "symbolic link loop (the link resolves back to itself)"
DIRECTORY_CYCLE = "symbolic link to a folder that contains it (directory cycle)"
INVALID_FILE_NAME = "file name is not valid UTF-8"
INVALID_FOLDER_NAME = "folder name is not valid UTF-8"

#: Called with a file or folder the scan does not use and the reason.
SkipHandler = Callable[[Path, str], None]


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


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (starts with ``.``); ``.`` and ``..`` are not names here."""
    return name.startswith(".")


def cannot_list(exc: OSError) -> str:
    """The reason given for a folder that cannot be listed."""
    return f"cannot list folder ({exc.strerror or exc})"


def already_scanned(first: str) -> str:
    """The reason given for a second path (a link, a mount) to a folder that is scanned as ``first``."""
    return f"same folder as {first} (scanned there)"


@dataclass(frozen=True)
class Entry:
    """A usable file or folder: its path (under the folder listed) and whether it is a folder."""

    path: Path
    is_dir: bool


def _skip(on_skip: SkipHandler | None, path: Path, reason: str) -> None:
    if on_skip is not None:
        on_skip(path, reason)


def _link_problem(path: Path) -> str | None:
    """Why the symbolic link ``path`` cannot be followed, or None when its target exists."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return BROKEN_LINK
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return LINK_LOOP
        return f"cannot follow symbolic link ({exc.strerror or exc})"
    return None


def list_folder(directory: str | os.PathLike[str], on_skip: SkipHandler | None = None) -> list[Entry]:
    """The usable entries of one folder, sorted by name; the others go to ``on_skip`` with the reason."""
    return _scan(Path(directory), on_skip) or []


def _scan(directory: Path, on_skip: SkipHandler | None) -> list[Entry] | None:
    """:func:`list_folder`, but None when the folder cannot be listed at all."""
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        _skip(on_skip, directory, cannot_list(exc))
        return None
    listed = []
    for entry in entries:
        path = Path(entry.path)
        if is_hidden(entry.name):
            _skip(on_skip, path, HIDDEN)
            continue
        try:
            is_dir = entry.is_dir()  # follows links
        except OSError:
            is_dir = False
        if not has_valid_name(entry.name):
            _skip(on_skip, path, INVALID_FOLDER_NAME if is_dir else INVALID_FILE_NAME)
            continue
        if entry.is_symlink():
            problem = _link_problem(path)
            if problem is not None:
                _skip(on_skip, path, problem)
                continue
        listed.append(Entry(path, is_dir))
    return listed


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def walk(
    directory: str | os.PathLike[str],
    on_skip: SkipHandler | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[Entry]:
    """Every file and folder below ``directory``, depth first in sorted order.

    A folder is yielded before its contents, and the files of a folder before its sub-folders' contents;
    ``directory`` itself is not yielded. Folders in ``exclude`` (an output folder inside the input, say)
    are left out without a report; everything else that is not scanned goes to ``on_skip``.
    """
    directory = Path(directory)
    try:
        info = os.stat(directory)
    except OSError as exc:
        problem = _link_problem(directory) if directory.is_symlink() else None
        _skip(on_skip, directory, problem or f"cannot read folder ({exc.strerror or exc})")
        return
    start = (info.st_dev, info.st_ino)
    above = {key for key in map(_identity, Path(os.path.abspath(directory)).parents) if key is not None}
    if start in above:
        _skip(on_skip, directory, DIRECTORY_CYCLE)
        return
    scanned: dict[tuple[int, int], Path | None] = {}
    for path in exclude:
        key = _identity(Path(path))
        if key is not None:
            scanned[key] = None
    scanned[start] = directory
    # (folder, identities of the folders above it and itself in this walk)
    stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = [(directory, (start,))]
    while stack:
        current, chain = stack.pop()
        entries = _scan(current, on_skip)
        if entries is None:
            continue
        if current is not directory:
            yield Entry(current, True)
        subfolders = []
        for entry in entries:
            if not entry.is_dir:
                yield entry
                continue
            key = _identity(entry.path)
            if key is None:  # gone since it was listed
                _skip(on_skip, entry.path, "cannot read folder (it disappeared)")
            elif key in chain:
                _skip(on_skip, entry.path, DIRECTORY_CYCLE)
            elif key in scanned:
                first = scanned[key]
                if first is not None:  # None: excluded by the caller
                    _skip(on_skip, entry.path, already_scanned(os.path.relpath(first, directory) + "/"))
            else:
                scanned[key] = entry.path
                subfolders.append((entry.path, (*chain, key)))
        stack.extend(reversed(subfolders))


def walk_files(
    directory: str | os.PathLike[str],
    on_skip: SkipHandler | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[Path]:
    """Every file below ``directory``, by the rules of :func:`walk`."""
    for entry in walk(directory, on_skip, exclude):
        if not entry.is_dir:
            yield entry.path
