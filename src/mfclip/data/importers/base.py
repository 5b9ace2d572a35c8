"""What every importer shares: the registry, the row builder, directory scanning and file checks.

An importer reads one dataset's own layout and returns manifest rows plus the files it skipped, each
with a reason. :func:`import_dataset` runs an importer, checks every file it listed (existence, empty
files, image headers or a full decode), removes duplicates, fills missing splits, and
:func:`run_import` writes the manifest and ``<out>.skipped.csv`` beside it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mfclip.data.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageDecodeError, load_image
from mfclip.data.manifest import (
    ManifestError,
    assign_splits,
    check_manifest_destination,
    check_split_fractions,
    write_manifest,
)
from mfclip.data.paths import SkipHandler, display_path, list_folder
from mfclip.data.paths import walk_files as walk_tree_files
from mfclip.data.video import VIDEO_EXTENSIONS
from mfclip.schema import MANIFEST_COLUMNS, SPLITS
from mfclip.utils.config import closest
from mfclip.utils.io import atomic_write

VerifyMode = Literal["none", "header", "full"]

# Folder names that mean a split, in the spellings datasets use.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


class ImporterError(ManifestError):
    """A dataset cannot be imported (wrong root, missing index file, nothing found); names the path.

    ``result`` holds what was found before the failure (for the skipped-file log), when anything was.
    """

    def __init__(self, message: str, result: ImportResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class SkippedFile:
    """A file or folder an importer did not turn into a row, and why."""

    path: str
    reason: str


@dataclass
class ImportResult:
    """Rows (manifest dicts), skipped files, warnings; paths of the written files after :func:`run_import`."""

    dataset: str
    root: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    split_hint: str | None = None
    manifest_path: Path | None = None
    skipped_path: Path | None = None

    def frame(self) -> pd.DataFrame:
        """The rows as a manifest DataFrame (standard columns first, extras after)."""
        df = pd.DataFrame.from_records(self.rows)
        if df.empty:
            df = pd.DataFrame(columns=list(MANIFEST_COLUMNS))
        for column in MANIFEST_COLUMNS:
            if column not in df.columns:
                df[column] = ""
        extras = [c for c in df.columns if c not in MANIFEST_COLUMNS]
        df = df[list(MANIFEST_COLUMNS) + extras]
        for column in df.columns:
            if column != "label":
                df[column] = df[column].fillna("").astype(str)
        df["label"] = df["label"].astype("int64")
        return df


class RowBuilder:
    """Collects rows, skipped files and warnings for one import."""

    def __init__(self, dataset: str, root: Path) -> None:
        self.result = ImportResult(dataset=dataset, root=root)
        self._warned: set[str] = set()
        self._skipped_paths: set[SkippedFile] = set()

    def add(
        self,
        path: str,
        label: int,
        split: str = "",
        forgery_type: str = "",
        family: str = "",
        generator: str = "",
        video_id: str = "",
        dataset: str | None = None,
        **extra: str,
    ) -> None:
        row: dict[str, Any] = {
            "path": path,
            "label": int(label),
            "split": split,
            "dataset": dataset if dataset is not None else self.result.dataset,
            "forgery_type": forgery_type,
            "family": family,
            "generator": generator,
            "video_id": video_id,
        }
        row.update(extra)
        self.result.rows.append(row)

    def skip(self, path: str, reason: str) -> None:
        self.result.skipped.append(SkippedFile(path, reason))

    def skip_path(self, path: Path, reason: str) -> None:
        """Record a file or folder found on disk (folders get a trailing ``/``), once per reason."""
        text = display_path(relative(path, self.result.root))
        if path.is_dir() and not path.is_symlink():
            text = text.rstrip("/") + "/"
        item = SkippedFile(text, reason)
        if item not in self._skipped_paths:
            self._skipped_paths.add(item)
            self.result.skipped.append(item)

    def walk_files(self, directory: Path, progress: Progress | None = None) -> Iterator[Path]:
        """:func:`walk_files` recording what cannot be used as skipped, staying inside the root."""
        return walk_files(directory, progress, self.skip_path)

    def child_dirs(self, directory: Path) -> list[Path]:
        """:func:`child_dirs` recording what cannot be used as skipped, staying inside the root."""
        return child_dirs(directory, self.skip_path)

    def child_files(self, directory: Path) -> list[Path]:
        """:func:`child_files` recording what cannot be used as skipped, staying inside the root."""
        return child_files(directory, self.skip_path)

    def find_child(self, directory: Path, name: str) -> Path | None:
        """:func:`find_child` recording what cannot be used as skipped, staying inside the root."""
        return find_child(directory, name, self.skip_path)

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.result.warnings.append(message)


# --------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class ImporterInfo:
    name: str
    description: str
    function: Callable[..., ImportResult]
    options: tuple[str, ...] = ()


_REGISTRY: dict[str, ImporterInfo] = {}


def register_importer(
    name: str, description: str, options: Sequence[str] = ()
) -> Callable[[Callable[..., ImportResult]], Callable[..., ImportResult]]:
    """Register ``function(root, *, dataset_name, prompt_set, progress, **options) -> ImportResult``."""

    def decorator(function: Callable[..., ImportResult]) -> Callable[..., ImportResult]:
        _REGISTRY[name] = ImporterInfo(name, description, function, tuple(options))
        return function

    return decorator


def list_importers() -> list[str]:
    """Names of the registered importers (``mfclip import <name>``)."""
    return sorted(_REGISTRY)


def get_importer(name: str) -> ImporterInfo:
    if name not in _REGISTRY:
        hint = closest(name, _REGISTRY)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ImporterError(
            f"unknown dataset importer {name!r}{suggestion}; available: {', '.join(list_importers())}"
        )
    return _REGISTRY[name]


# --------------------------------------------------------------------------------------------------
# Helpers used by the importers


def file_kind(name: str) -> Literal["image", "video", "other"]:
    lower = name.lower()
    if lower.endswith(IMAGE_EXTENSIONS):
        return "image"
    if lower.endswith(VIDEO_EXTENSIONS):
        return "video"
    return "other"


def relative(path: Path | str, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()


def split_from_name(name: str) -> str | None:
    return SPLIT_NAMES.get(name.lower())


def child_dirs(directory: Path, on_skip: SkipHandler | None = None) -> list[Path]:
    """Sub-folders of ``directory`` by name, by the rules of :mod:`mfclip.data.paths`; with ``on_skip``,
    what cannot be used (hidden, broken links, unlistable, invalid names) is reported."""
    return [entry.path for entry in list_folder(directory, on_skip) if entry.is_dir]


def child_files(directory: Path, on_skip: SkipHandler | None = None) -> list[Path]:
    """Files (everything but folders) of ``directory`` by name; reports as :func:`child_dirs` does."""
    return [entry.path for entry in list_folder(directory, on_skip) if not entry.is_dir]


def find_child(directory: Path, name: str, on_skip: SkipHandler | None = None) -> Path | None:
    """The child folder whose name equals ``name`` ignoring case, or None."""
    for child in child_dirs(directory, on_skip):
        if child.name.lower() == name.lower():
            return child
    return None


class Progress:
    """A tqdm counter of scanned files (total unknown), silent when disabled."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=desc, unit=" files", leave=False, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def walk_files(
    directory: Path,
    progress: Progress | None = None,
    on_skip: SkipHandler | None = None,
) -> Iterator[Path]:
    """Every file below ``directory`` by the rules of :mod:`mfclip.data.paths` (links followed, each
    folder once, hidden entries left out); what is not scanned goes to ``on_skip`` with the reason."""
    for path in walk_tree_files(directory, on_skip):
        if progress is not None:
            progress.update()
        yield path


def _normalised_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_generator(name: str, prompt_set: Any) -> str:
    """The prompt set's spelling of a generator (matching ignores case and punctuation), else ``name``."""
    if not name:
        return name
    if name in prompt_set.generators:
        return name
    wanted = _normalised_name(name)
    for known in prompt_set.generators:
        if _normalised_name(known) == wanted:
            return known
    return name


def generator_labels(generator: str, prompt_set: Any) -> tuple[str, str]:
    """(forgery_type, family) of a generator from the prompt set's table; empty strings when unknown."""
    info = prompt_set.generators.get(generator)
    if info is None:
        return "", ""
    return info.forgery_type or "", info.family or ""


def load_prompts(prompt_set: str | Any) -> Any:
    from mfclip.prompts import load_prompt_set

    return load_prompt_set(prompt_set) if isinstance(prompt_set, str) else prompt_set


# --------------------------------------------------------------------------------------------------
# File checks


def check_file(full: str, mode: VerifyMode, max_pixels: int | None) -> str | None:
    """Why the file cannot be a sample (missing, empty, not an image, too large, corrupt), or None."""
    try:
        info = os.stat(full)
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if not os.path.isfile(full):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    if file_kind(full) != "image" or mode == "none":
        return None
    if mode == "full":
        try:
            load_image(full, max_pixels=max_pixels)
        except ImageDecodeError as exc:
            return exc.reason
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(full) as image:
            width, height = image.size
    except UnidentifiedImageError:
        return "not a recognised image format"
    except Image.DecompressionBombError:
        return "refused as a possible decompression bomb"
    except PermissionError:
        return "permission denied"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image header ({exc})"
    if max_pixels is not None and width * height > max_pixels:
        return f"image is {width}x{height} = {width * height} pixels, above the limit {max_pixels}"
    return None


def verify_rows(
    rows: list[dict[str, Any]],
    root: Path,
    mode: VerifyMode,
    max_pixels: int | None,
    workers: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], list[SkippedFile]]:
    """Split ``rows`` into those whose files pass :func:`check_file` and skipped entries for the rest."""
    if not rows:
        return [], []
    from PIL import Image
    from tqdm.auto import tqdm

    root_text = str(root)
    paths = [os.path.join(root_text, row["path"]) for row in rows]
    with warnings.catch_warnings():
        # Oversized images are reported by the pixel limit; PIL's own warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            reasons = pool.map(lambda p: check_file(p, mode, max_pixels), paths, chunksize=64)
            label = {"none": "checking files", "header": "checking image headers", "full": "decoding images"}[
                mode
            ]
            reasons = list(tqdm(reasons, total=len(paths), desc=label, unit=" files", disable=not progress))
    kept, skipped = [], []
    for row, reason in zip(rows, reasons, strict=True):
        if reason is None:
            kept.append(row)
        else:
            skipped.append(SkippedFile(row["path"], reason))
    return kept, skipped


# --------------------------------------------------------------------------------------------------
# Running an import


def import_dataset(
    name: str,
    root: str | Path,
    *,
    dataset_name: str | None = None,
    default_split: str | None = None,
    split_fractions: Sequence[float] | None = None,
    split_seed: int = 0,
    verify: VerifyMode = "header",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 8,
    prompt_set: str = "default",
    progress: bool = False,
    **options: Any,
) -> ImportResult:
    """Run importer ``name`` on ``root`` and check every file it found; nothing is written.

    Rows whose layout gives no split get ``default_split`` or, with ``split_fractions`` (train, val,
    test), a split drawn by a stable hash of their video (or path); otherwise the import fails with a
    message saying so. Files that are missing, empty, not images, too large or (``verify="full"``) do not
    decode are skipped and listed; ``verify="none"`` checks existence and size only.
    """
    info = get_importer(name)
    root = Path(root)
    if not root.is_dir():
        raise ImporterError(f"dataset root {root} is not a directory")
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ImporterError(
            f"importer {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(info.options) or 'none beyond the common ones'}"
        )
    if default_split is not None and default_split not in SPLITS:
        raise ImporterError(f"default split must be one of {', '.join(SPLITS)}, got {default_split!r}")
    if verify not in ("none", "header", "full"):
        raise ImporterError(f"verify must be none, header or full, got {verify!r}")
    if split_fractions is not None:  # checked even when the layout gives every row a split
        check_split_fractions(split_fractions)
    options = {k: v for k, v in options.items() if v is not None}
    result = info.function(
        root, dataset_name=dataset_name, prompt_set=prompt_set, progress=progress, **options
    )

    rows, duplicates = [], []
    seen: set[str] = set()
    for row in result.rows:
        if row["path"] in seen:
            duplicates.append(SkippedFile(row["path"], "listed more than once; kept the first"))
            continue
        seen.add(row["path"])
        rows.append(row)
    kept, failed = verify_rows(rows, root, verify, max_pixels, workers, progress)
    result.rows = kept
    result.skipped.extend(duplicates + failed)

    if not result.rows:
        raise ImporterError(_nothing_found_message(root, result), result)
    missing = sum(1 for row in result.rows if not row["split"])
    if missing:
        if split_fractions is not None:
            frame = assign_splits(result.frame(), split_fractions, seed=split_seed)
            for row, split in zip(result.rows, frame["split"].tolist(), strict=True):
                row["split"] = split
        elif default_split is not None:
            for row in result.rows:
                row["split"] = row["split"] or default_split
        else:
            reason = result.split_hint or f"the {name} layout under {root} defines no split for them"
            raise ImporterError(
                f"{missing} of {len(result.rows)} rows have no split ({reason}); pass --default-split "
                "(e.g. test for an evaluation-only dataset) or --split-fractions 0.8,0.1,0.1",
                result,
            )
    return result


def _nothing_found_message(root: Path, result: ImportResult) -> str:
    message = f"no images found under {root}"
    if result.skipped:
        reasons: dict[str, int] = {}
        for item in result.skipped:
            reasons[item.reason] = reasons.get(item.reason, 0) + 1
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        listed = "; ".join(f"{n} × {reason}" for reason, n in top)
        message += f" ({len(result.skipped)} files or folders skipped: {listed})"
    return message


def skipped_log_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".skipped.csv")


def write_skipped(path: str | Path, skipped: Sequence[SkippedFile]) -> Path:
    """Write the skipped files as CSV (path, reason), atomically; written even when empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    for item in skipped:
        writer.writerow([item.path, item.reason])
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def run_import(name: str, root: str | Path, out: str | Path, **kwargs: Any) -> ImportResult:
    """:func:`import_dataset`, then write the manifest to ``out`` and the skipped files beside it.

    ``out`` is checked (format suffix, not a folder, its folder creatable) before the scan starts. The
    skipped-file log is written even when the import fails because nothing was found.
    """
    out = check_manifest_destination(out)
    log = skipped_log_path(out)
    if log.is_dir():
        raise ImporterError(
            f"{log}: the skipped-file log path is a folder; remove it or choose another --out"
        )
    try:
        result = import_dataset(name, root, **kwargs)
    except ImporterError as exc:
        if exc.result is not None and exc.result.skipped:
            write_skipped(log, exc.result.skipped)
            raise ImporterError(f"{exc}\nskipped files are listed in {log}", exc.result) from None
        raise
    result.skipped_path = write_skipped(log, result.skipped)
    result.manifest_path = write_manifest(result.frame(), out)
    return result
