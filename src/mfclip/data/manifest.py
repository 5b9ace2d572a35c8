"""Manifests: the one table format that drives training and evaluation.

A manifest is a CSV or Parquet table with one row per image (or per video, before face preprocessing)::

    path, label, split, dataset, forgery_type, family, generator, video_id

``path`` is relative to a root directory given at run time; ``label`` is 0 (real) or 1 (fake); ``split``
is ``train``, ``val`` or ``test``; the other columns are free text where an empty string means unknown.
Extra columns (for example ``subset`` or ``compression``) are kept as they are.

A loaded manifest is a ``pandas.DataFrame`` whose index is the row's position in the manifest file
(0-based, header excluded); it stays attached to every row through filtering, so predictions can always
be traced back to their row. Messages number rows as a spreadsheet shows the file: the header is row 1,
the first data row is row 2 (:func:`spreadsheet_row`).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import logging
import os
import posixpath
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mfclip.data.video import is_video_path
from mfclip.schema import (  # the columns, splits and labels of a manifest, defined there for every part
    CLASS_NAMES,
    DESCRIPTIVE_COLUMNS,
    LABEL_NAMES,
    MANIFEST_COLUMNS,
    REQUIRED_COLUMNS,
    SPLITS,
)
from mfclip.utils.config import closest
from mfclip.utils.io import atomic_write

if TYPE_CHECKING:
    from mfclip.prompts import PromptSet

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")

_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")


class ManifestError(ValueError):
    """A manifest file or table is invalid; the message names the file, row and column."""


# --------------------------------------------------------------------------------------------------
# Reading and writing


def _manifest_format(path: Path) -> Literal["csv", "parquet"]:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise ManifestError(f"{path}: unknown manifest format; use one of {', '.join(MANIFEST_SUFFIXES)}")


def check_manifest_destination(path: str | Path) -> Path:
    """Refuse a manifest output path that cannot be written, before any work is done.

    The suffix must name a manifest format, the path must not be a folder, and its folder must exist or be
    creatable (the nearest existing ancestor is a writable folder).
    """
    path = Path(path)
    _manifest_format(path)
    if path.is_dir():
        raise ManifestError(
            f"{path}: output manifest path is a folder; give a file name such as {path / 'manifest.csv'}"
        )
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ManifestError(f"{path}: cannot create the output folder, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ManifestError(f"{path}: cannot write the output, folder {ancestor} is not writable")
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet manifest (format by suffix) without validating its rows.

    Every column except ``label`` is read as text with empty strings for missing values; optional
    descriptive columns that the file lacks are added as empty. ``label`` becomes int64 when every value
    is 0 or 1 and stays text otherwise, so :func:`validate_manifest` can name the bad rows.
    """
    path = Path(path)
    fmt = _manifest_format(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        if fmt == "csv":
            df = _read_csv(path)
            header_fields, ragged = _ragged_rows(path)
        else:
            df = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{path}: manifest file is empty (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "CSV" if fmt == "csv" else "Parquet"
        raise ManifestError(f"{path}: not a readable {kind} manifest ({exc})") from None
    df = _normalise_columns(df)
    df.attrs["source"] = str(path)
    if fmt == "csv" and ragged:
        df.attrs["ragged_rows"] = ragged
        df.attrs["header_fields"] = header_fields
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    """All cells as text; a row with more fields than the header is cut to the header's width (and kept
    in place, so row numbers stay true), since validation reports it (see :func:`_ragged_rows`)."""
    options: dict[str, Any] = {"dtype": str, "keep_default_na": False, "na_filter": False, "index_col": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        try:
            return pd.read_csv(path, **options)
        except pd.errors.ParserError:
            # The fast parser refuses long rows; this one passes them to the callable, which keeps them.
            return pd.read_csv(path, engine="python", on_bad_lines=lambda fields: fields, **options)


def _ragged_rows(path: Path) -> tuple[int, dict[int, int]]:
    """The header's field count and {row: field count} of the CSV rows (0-based, blank lines skipped)
    whose field count differs from it."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        ragged: dict[int, int] = {}
        row = 0
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                ragged[row] = len(fields)
            row += 1
    return len(header), ragged


def _normalise_columns(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    for column in df.columns:
        if column == "label":
            continue
        series = df[column]
        if series.dtype.kind in "iub":
            df[column] = series.astype(str)
        elif series.dtype.kind == "f":
            df[column] = series.map(cell_text)
        else:
            df[column] = series.fillna("").astype(str)
    for column in DESCRIPTIVE_COLUMNS:
        if column not in df.columns:
            df[column] = ""
    if "label" in df.columns:
        df["label"] = _coerce_labels(df["label"])
    df.index = pd.RangeIndex(len(df))
    return df


def cell_text(value: Any) -> str:
    """A manifest cell as text: empty for a missing value (None, NaN, ``pd.NA``), an integral float
    without its ``.0`` (``3.0`` → ``"3"``, as a CSV read by pandas may give), anything else ``str()``."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_label(value: Any, names: bool = False) -> int | None:
    """0 or 1 from an int, an integral float or the text "0"/"1" (also "0.0"/"1.0"); with ``names`` also
    "real"/"fake" in any case (:data:`LABEL_NAMES`). None for anything else, booleans included."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if value in (0, 1) else None
    if isinstance(value, (float, np.floating)):
        return int(value) if value in (0.0, 1.0) else None
    if isinstance(value, str):
        text = value.strip()
        if text in ("0", "1"):
            return int(text)
        if text in ("0.0", "1.0"):
            return int(float(text))
        if names:
            return LABEL_NAMES.get(text.lower())
    return None


def label_values(series: pd.Series) -> pd.Series:
    """Labels parsed to 0/1 (int64), or with None where a value is not a valid label (object)."""
    if series.dtype.kind in "iu" and series.isin([0, 1]).all():
        return series.astype("int64")
    return series.map(parse_label)


def _coerce_labels(series: pd.Series) -> pd.Series:
    if series.dtype.kind in "iu" and series.isin([0, 1]).all():
        return series.astype("int64")
    parsed = series.map(parse_label)
    if parsed.notna().all():
        return parsed.astype("int64")
    return series.map(cell_text) if series.dtype.kind not in "iuf" else series


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` atomically as CSV or Parquet (format by suffix), standard columns first.

    Missing descriptive columns are written as empty; the DataFrame index is not written.
    """
    path = Path(path)
    fmt = _manifest_format(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: cannot write a manifest without column(s) {', '.join(missing)}")
    table = df.copy()
    for column in DESCRIPTIVE_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    extras = [c for c in table.columns if c not in MANIFEST_COLUMNS]
    table = table[list(MANIFEST_COLUMNS) + extras].reset_index(drop=True)
    for column in table.columns:
        if column != "label":
            table[column] = table[column].map(cell_text)
    labels = _coerce_labels(table["label"])
    if labels.dtype.kind == "i":
        table["label"] = labels
    if fmt == "csv":
        compression = "gzip" if path.name.lower().endswith(".gz") else None
        if compression:
            with atomic_write(path, "wb") as handle:
                table.to_csv(handle, index=False, lineterminator="\n", compression=compression)
        else:
            with atomic_write(path, "w") as handle:
                table.to_csv(handle, index=False, lineterminator="\n")
    else:
        with atomic_write(path, "wb") as handle:
            table.to_parquet(handle, index=False)
    return path


# --------------------------------------------------------------------------------------------------
# Validation


def spreadsheet_row(row: int) -> int:
    """The number a spreadsheet shows for manifest row ``row`` (the 0-based DataFrame index): the header
    is row 1, so the first data row is row 2. Every message about a manifest row uses it."""
    return int(row) + 2


@dataclass(frozen=True)
class ManifestProblem:
    """One problem: ``row`` is the 0-based row index (None for the whole table), ``column`` the field.

    Printed, the row is numbered as a spreadsheet shows the file (:func:`spreadsheet_row`).
    """

    row: int | None
    column: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {spreadsheet_row(self.row)}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        prefix = ", ".join(where) or "manifest"
        tag = "" if self.severity == "error" else " (warning)"
        return f"{prefix}: {self.message}{tag}"


@dataclass
class ManifestReport:
    """Every problem :func:`validate_manifest` found; ``ok`` when there is no error."""

    num_rows: int
    problems: list[ManifestProblem] = field(default_factory=list)
    source: str = "manifest"

    @property
    def errors(self) -> list[ManifestProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[ManifestProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def bad_rows(self) -> list[int]:
        """Row numbers with at least one error, sorted."""
        return sorted({p.row for p in self.errors if p.row is not None})

    @property
    def table_errors(self) -> list[ManifestProblem]:
        """Errors that concern the whole table (a missing column, no rows); dropping rows cannot fix them."""
        return [p for p in self.errors if p.row is None]

    def format(self, limit: int | None = 20) -> str:
        """A readable report: a summary line, then at most ``limit`` problems and how many more there are."""
        errors, warnings = self.errors, self.warnings
        if not self.problems:
            return f"{self.source}: {self.num_rows} rows, no problems"
        head = (
            f"{self.source}: {self.num_rows} rows, {len(errors)} error(s) in "
            f"{len(self.bad_rows)} row(s), {len(warnings)} warning(s)"
        )
        ordered = errors + warnings
        shown = ordered if limit is None else ordered[:limit]
        lines = [head, *(f"  {p}" for p in shown)]
        if len(ordered) > len(shown):
            lines.append(f"  ... and {len(ordered) - len(shown)} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def path_problem(path: str) -> str | None:
    """Why a manifest path is not acceptable (empty, absolute, escaping the root), or None."""
    if not path.strip():
        return "empty path"
    if path.startswith(("/", "\\")) or _WINDOWS_ABSOLUTE.match(path):
        return f"absolute path {path!r}; paths must be relative to the dataset root"
    normalised = posixpath.normpath(path.replace("\\", "/"))
    if normalised == ".." or normalised.startswith("../"):
        return f"path {path!r} escapes the dataset root"
    if normalised == ".":
        return f"path {path!r} names the root itself, not a file"
    return None


def _normalised_key(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def validate_manifest(
    df: pd.DataFrame,
    root: str | Path | None = None,
    check_files: bool = True,
    prompt_set: str | PromptSet | None = "default",
    progress: bool = False,
    source: str | None = None,
) -> ManifestReport:
    """List every problem of a manifest table with its row number and column.

    Errors: a missing required column, no rows, a label other than 0/1, a split other than
    train/val/test, an empty, absolute or root-escaping path, a duplicate path and (when ``root`` is given
    and ``check_files``) a file that does not exist. Warnings (which do not make the manifest invalid): a
    forgery type or family that the prompt set does not know, and labels given for a real image.
    """
    source = source or str(df.attrs.get("source", "manifest"))
    report = ManifestReport(num_rows=len(df), source=source)
    add = report.problems.append
    rows = np.asarray(df.index)

    for column in REQUIRED_COLUMNS:
        if column not in df.columns:
            hint = closest(column, [str(c) for c in df.columns])
            suggestion = f" (found {hint!r}; rename it?)" if hint else ""
            add(ManifestProblem(None, column, f"required column is missing{suggestion}"))
    if len(df) == 0:
        add(ManifestProblem(None, None, "manifest has no rows"))
        return report

    ragged: dict[int, int] = df.attrs.get("ragged_rows") or {}
    header_fields = df.attrs.get("header_fields")
    for row in rows:
        fields = ragged.get(int(row))
        if fields is not None:
            add(ManifestProblem(int(row), None, f"{fields} fields, but the header has {header_fields}"))

    path_ok = np.zeros(len(df), dtype=bool)
    if "path" in df.columns:
        paths = [cell_text(p) for p in df["path"].tolist()]
        first_seen: dict[str, int] = {}
        for i, (row, path) in enumerate(zip(rows, paths, strict=True)):
            problem = path_problem(path)
            if problem:
                add(ManifestProblem(int(row), "path", problem))
                continue
            key = _normalised_key(path)
            if key in first_seen:
                add(
                    ManifestProblem(
                        int(row),
                        "path",
                        f"duplicate path {path!r} (first at row {spreadsheet_row(first_seen[key])})",
                    )
                )
                continue
            first_seen[key] = int(row)
            path_ok[i] = True

    labels: list[int | None] = []
    if "label" in df.columns:
        values = df["label"].tolist()
        cache: dict[Any, int | None] = {}
        for row, value in zip(rows, values, strict=True):
            try:
                parsed = cache[value]
            except (KeyError, TypeError):
                parsed = parse_label(value)
                with contextlib.suppress(TypeError):
                    cache[value] = parsed
            labels.append(parsed)
            if parsed is None:
                add(ManifestProblem(int(row), "label", f"label must be 0 (real) or 1 (fake), got {value!r}"))

    if "split" in df.columns:
        for row, value in zip(rows, df["split"].tolist(), strict=True):
            if value not in SPLITS:
                hint = closest(str(value).strip().lower(), SPLITS) if str(value).strip() else None
                suggestion = f"; did you mean {hint!r}?" if hint else ""
                add(
                    ManifestProblem(
                        int(row), "split", f"split must be one of train, val, test, got {value!r}{suggestion}"
                    )
                )

    if prompt_set is not None and labels:
        _check_vocabulary(df, rows, labels, prompt_set, add)

    if root is not None and check_files and "path" in df.columns:
        root_path = Path(root)
        if not root_path.is_dir():
            add(ManifestProblem(None, None, f"dataset root {root_path} is not a directory"))
        else:
            _check_files(root_path, rows, df["path"].tolist(), path_ok, add, progress)
    report.problems.sort(key=lambda p: (p.severity != "error", -1 if p.row is None else p.row))
    return report


def _check_vocabulary(df: pd.DataFrame, rows: np.ndarray, labels: list[int | None], prompt_set, add) -> None:
    from mfclip.prompts import load_prompt_set

    prompts = load_prompt_set(prompt_set) if isinstance(prompt_set, str) else prompt_set
    # The prompt set's own vocabulary: a custom set may name other forgery types or families.
    known = {"forgery_type": set(prompts.levels.forgery_type), "family": set(prompts.levels.family)}
    for column, vocabulary in known.items():
        if column not in df.columns:
            continue
        unknown: dict[str, str | None] = {}
        for value in set(df[column].tolist()):
            text = cell_text(value)
            canonical = prompts.canonical(column, text)
            if canonical is not None and canonical not in vocabulary:
                unknown[text] = closest(text.lower(), vocabulary)
        if not unknown:
            continue
        for row, value, label in zip(rows, df[column].tolist(), labels, strict=True):
            text = cell_text(value)
            if label == 1 and text in unknown:
                hint = unknown[text]
                suggestion = f"; did you mean {hint!r}?" if hint else ""
                add(
                    ManifestProblem(
                        int(row),
                        column,
                        f"unknown {column} {text!r} (its prompt level will be skipped){suggestion}",
                        "warning",
                    )
                )
    fake_only = [c for c in ("forgery_type", "family", "generator") if c in df.columns]
    if fake_only:
        filled = np.zeros(len(df), dtype=bool)
        for column in fake_only:
            filled |= df[column].map(lambda v: bool(cell_text(v).strip())).to_numpy(dtype=bool)
        for i in np.flatnonzero(filled):
            if labels[i] == 0:
                add(
                    ManifestProblem(
                        int(rows[i]),
                        None,
                        "real image (label 0) has forgery labels; they are ignored",
                        "warning",
                    )
                )


def _check_files(
    root: Path, rows: np.ndarray, paths: list[Any], path_ok: np.ndarray, add, progress: bool
) -> None:
    from tqdm.auto import tqdm

    iterator = zip(rows, paths, path_ok, strict=True)
    if progress:
        iterator = tqdm(iterator, total=len(paths), desc="checking files", unit="file", leave=False)
    root_text = str(root)
    for row, path, ok in iterator:
        if not ok:
            continue
        full = os.path.join(root_text, str(path))
        if not os.path.isfile(full):
            reason = "is a directory, not a file" if os.path.isdir(full) else "file not found"
            add(ManifestProblem(int(row), "path", f"{path}: {reason} under {root}"))


def load_manifest(
    path: str | Path,
    root: str | Path | None,
    drop_invalid: bool = False,
    check_files: bool = True,
    max_listed: int = 20,
    prompt_set: str | PromptSet | None = "default",
    progress: bool = False,
) -> pd.DataFrame:
    """Read and validate a manifest; refuse it with a message listing its problems unless ``drop_invalid``.

    With ``drop_invalid=True`` rows with errors are dropped and their number is logged (and stored in
    ``df.attrs["dropped_rows"]``); problems of the whole table (a missing column) still raise. ``root``
    defaults to the manifest's own folder when None. The result has int64 labels, text elsewhere, and keeps
    the manifest row numbers as its index.
    """
    path = Path(path)
    root_path = Path(root) if root is not None else path.parent
    df = read_manifest(path)
    report = validate_manifest(
        df,
        root=root_path,
        check_files=check_files,
        prompt_set=prompt_set,
        progress=progress,
        source=str(path),
    )
    if report.table_errors or (report.errors and not drop_invalid):
        hint = (
            ""
            if report.table_errors
            else f"\nrun `mfclip manifest validate {path} --root {root_path}` for the full list; to skip "
            "the bad rows, load with drop_invalid=True (Python) or pass data.drop_invalid=true (mfclip train)"
        )
        raise ManifestError(f"invalid manifest\n{report.format(max_listed)}{hint}")
    dropped = report.bad_rows
    if dropped:
        shown = "; ".join(str(p) for p in report.errors[:3])
        logger.warning(
            "%s: dropped %d of %d rows with problems (%s%s)",
            path,
            len(dropped),
            len(df),
            shown,
            "; ..." if len(report.errors) > 3 else "",
        )
        df = df.drop(index=dropped)
        if len(df) == 0:
            raise ManifestError(f"{path}: every row has a problem; nothing left after dropping them")
    for warning in report.warnings[:5]:
        logger.info("%s: %s", path, warning)
    df["label"] = label_values(df["label"]).astype("int64")
    df.attrs["source"] = str(path)
    df.attrs["root"] = str(root_path)
    df.attrs["dropped_rows"] = len(dropped)
    return df


# --------------------------------------------------------------------------------------------------
# Selection

Values = str | Iterable[str] | None


def _as_list(value: Values) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


def select_rows(
    df: pd.DataFrame,
    split: Values = None,
    dataset: Values = None,
    forgery_type: Values = None,
    family: Values = None,
    generator: Values = None,
    include_real: bool = True,
    exclude_generator: Values = None,
    where: Mapping[str, Values] | None = None,
    fake_where: Mapping[str, Values] | None = None,
    *,
    include_fake: bool = True,
    real_dataset: Values = None,
    key: str | None = None,
    context: str | None = None,
    field_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Rows matching the filters, in manifest order, keeping the manifest row numbers as the index.

    Each filter takes one value or a list (None: any). ``split`` and ``where`` (column → values) apply
    to every row; ``forgery_type``, ``family``, ``generator``, ``exclude_generator`` and ``fake_where``
    choose among the fakes; ``dataset`` applies to the fakes and, unless ``real_dataset`` names others,
    to the reals. Reals are kept when ``include_real``, fakes when ``include_fake``. E.g. "split=train,
    forgery_type in [entire_synthesis] plus reals" is
    ``select_rows(df, split="train", forgery_type=["entire_synthesis"])``.

    Strict: every value must occur in the rows it filters (the selected splits; the fakes for the fake
    filters, the reals for ``real_dataset``), a column must exist, and the selection must not be empty;
    otherwise :class:`ManifestError` names the filter (``{context}: {key}.{filter}``, the filter shown
    by ``field_names``), the missing values and those present. Protocols select through this
    (:meth:`mfclip.engine.protocol.RowSelector.select`).
    """
    source = df.attrs.get("source", "the manifest")
    prefix = f"{context}: " if context else ""
    names = dict(field_names or {})

    def label(field: str) -> str:
        shown = names.get(field, field)
        return f"{prefix}{key}.{shown}" if key else f"{prefix}{shown}"

    def column(name: str, field: str) -> pd.Series:
        if name not in df.columns:
            raise ManifestError(f"{label(field)}: {source} has no column {name!r}")
        return df[name].map(cell_text)

    def require(
        field: str,
        wanted: list[str] | None,
        values: pd.Series,
        rows: pd.Series,
        scope: str,
        any_split: pd.Series | None = None,
    ) -> None:
        """Every ``wanted`` value occurs among ``values[rows]``; the error says what is there, a close
        spelling (a case difference first) and, with ``any_split`` (the rows of the same kind in every
        split), the other splits a missing value occurs in."""
        if wanted is None:
            return
        present = set(values[rows].unique().tolist())
        missing = [value for value in wanted if value not in present]
        if not missing:
            return
        shown = sorted(v for v in present if v)
        listing = ", ".join(shown[:30]) + (f" and {len(shown) - 30} more" if len(shown) > 30 else "")
        notes = []
        for value in missing:
            same_letters = [v for v in shown if v.casefold() == value.casefold()]
            fuzzy = (
                closest(value, shown) if len(missing) == 1 else None
            )  # guessed by spelling for a lone name
            hint = same_letters[0] if same_letters else fuzzy
            if hint:
                notes.append(f"did you mean {hint!r}" + (f" for {value!r}?" if len(missing) > 1 else "?"))
            if any_split is not None and splits is not None and "split" in df.columns:
                others = sorted(
                    set(df.loc[any_split & (values == value), "split"].map(cell_text)) - set(splits)
                )
                if others:
                    notes.append(f"{value!r} occurs in split {', '.join(others)}")
        raise ManifestError(
            f"{label(field)}: {', '.join(map(repr, missing))} {'does' if len(missing) == 1 else 'do'} "
            f"not occur among {scope} of {source} (present: {listing or 'none'})"
            + "".join(f"; {note}" for note in notes)
        )

    if df.empty:
        raise ManifestError(f"{prefix}{key or 'the selection'}: {source} has no rows")
    if "label" not in df.columns:
        raise ManifestError(f"{prefix}{key or 'the selection'}: {source} has no column 'label'")
    splits = _as_list(split)
    everything = pd.Series(True, index=df.index)
    base = everything.copy()
    if splits is not None:
        values = column("split", "split")
        require("split", splits, values, everything, "the rows")
        base &= values.isin(splits)
    within = f"split {', '.join(splits)}" if splits is not None else "any split"
    for name, value in (where or {}).items():
        wanted = _as_list(value)
        values = column(name, name)
        require(name, wanted, values, base, f"the rows of {within}", everything)
        base &= values.isin(wanted or [])
    labels = label_values(df["label"])
    fake, real = base & (labels == 1), base & (labels == 0)
    fake_filters = [
        ("forgery_type", "forgery_type", forgery_type),
        ("family", "family", family),
        ("generator", "generator", generator),
        *((name, name, value) for name, value in (fake_where or {}).items()),
    ]
    scope = f"the fake rows of {within}"
    kept_fakes = fake.copy()
    for filter_name, column_name, value in fake_filters:
        wanted = _as_list(value)
        if wanted is not None:
            values = column(column_name, filter_name)
            require(filter_name, wanted, values, fake, scope, labels == 1)
            kept_fakes &= values.isin(wanted)
    excluded = _as_list(exclude_generator)
    if excluded is not None:
        values = column("generator", "exclude_generator")
        require("exclude_generator", excluded, values, fake, scope, labels == 1)
        kept_fakes &= ~values.isin(excluded)
    datasets, real_datasets = _as_list(dataset), _as_list(real_dataset)
    kept_reals = real.copy()
    if datasets is not None or real_datasets is not None:
        values = column("dataset", "dataset")
        use_reals = include_real and real_datasets is None
        filtered = (fake if include_fake else False) | (real if use_reals else False)
        kinds = ((labels == 1) if include_fake else False) | ((labels == 0) if use_reals else False)
        require("dataset", datasets, values, filtered, f"the rows of {within}", kinds)
        if include_real:
            require("real_dataset", real_datasets, values, real, f"the real rows of {within}", labels == 0)
        if datasets is not None:
            kept_fakes &= values.isin(datasets)
        if real_datasets is not None or datasets is not None:
            kept_reals &= values.isin(real_datasets if real_datasets is not None else datasets)
    selected = df[(kept_fakes & include_fake) | (kept_reals & include_real)]
    if selected.empty:
        given = {
            "split": splits,
            "dataset": datasets,
            "forgery_type": forgery_type,
            "family": family,
            "generator": generator,
            "exclude_generator": excluded,
            "real_dataset": real_datasets,
            **(where or {}),
            **(fake_where or {}),
            "include_real": None if include_real else False,
            "include_fake": None if include_fake else False,
        }
        filters = ", ".join(
            f"{names.get(k, k)}={_as_list(v) if isinstance(v, str) else v}"
            for k, v in given.items()
            if v is not None
        )
        raise ManifestError(
            f"{prefix}{key or 'the selection'} ({filters or 'all rows'}) selects no rows of {source}: "
            "each filter matches rows, but not together"
        )
    return selected


# --------------------------------------------------------------------------------------------------
# Splits and summaries


def check_split_fractions(fractions: Sequence[float]) -> None:
    """Refuse train/val/test fractions that are not three non-negative numbers summing to 1."""
    if len(fractions) != 3 or not all(f >= 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ManifestError(
            f"split fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}"
        )


def assign_splits(
    df: pd.DataFrame,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    group_column: str | None = "video_id",
    only_empty: bool = True,
) -> pd.DataFrame:
    """Fill ``split`` by a stable hash of each row's group, in the train/val/test ``fractions``.

    Rows that share a non-empty ``group_column`` value (a video, an identity) always land in the same
    split, so no group leaks across splits; rows with an empty group are assigned by their path. The hash
    depends only on ``seed`` and the group, so adding rows never moves existing ones. With ``only_empty``
    rows that already have a valid split keep it.
    """
    check_split_fractions(fractions)
    result = df.copy()
    if "split" not in result.columns:
        result["split"] = ""
    paths = result["path"].map(cell_text)
    if group_column and group_column in result.columns:
        groups = result[group_column].map(cell_text)
        keys = groups.where(groups != "", "path:" + paths)
    else:
        keys = "path:" + paths
    bounds = np.cumsum(fractions)

    def pick(key: str) -> str:
        digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        return SPLITS[min(int(np.searchsorted(bounds, position, side="right")), 2)]

    chosen = keys.map(pick)
    if only_empty:
        current = result["split"].map(cell_text)
        result["split"] = current.where(current.isin(SPLITS), chosen)
    else:
        result["split"] = chosen
    return result


def summarize_manifest(df: pd.DataFrame) -> dict[str, Any]:
    """Counts by split × label, dataset, forgery type, family and generator (fakes), and video count."""
    labels = label_values(df["label"])
    names = labels.map(dict(enumerate(CLASS_NAMES))).fillna("invalid")
    table = df.assign(_class=names)

    def counts(column: str, fakes_only: bool = False) -> dict[str, dict[str, int]]:
        part = table[table["_class"] == "fake"] if fakes_only else table
        if column not in part.columns:
            return {}
        grouped = part.groupby([part[column].map(cell_text), "_class"]).size()
        result: dict[str, dict[str, int]] = {}
        for (value, cls), n in grouped.items():
            result.setdefault(value or "(empty)", {})[cls] = int(n)
        return result

    videos = df["video_id"].map(cell_text) if "video_id" in df.columns else pd.Series([], dtype=str)
    return {
        "rows": len(df),
        "real": int((labels == 0).sum()),
        "fake": int((labels == 1).sum()),
        "videos": int(videos[videos != ""].nunique()),
        "video_files": int(df["path"].map(lambda p: is_video_path(cell_text(p))).sum())
        if "path" in df
        else 0,
        "split": counts("split"),
        "dataset": counts("dataset"),
        "forgery_type": counts("forgery_type", fakes_only=True),
        "family": counts("family", fakes_only=True),
        "generator": counts("generator", fakes_only=True),
    }
