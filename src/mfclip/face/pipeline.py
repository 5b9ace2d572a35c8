"""The preprocess pipeline: images and videos → face crops (or aligned faces) + a manifest.

Layout of an output folder ``DIR``::

    DIR/preprocess.json   settings that shape the crops (a rerun with other settings is refused)
    DIR/progress.jsonl    one line per finished source (append-only; how a rerun resumes)
    DIR/faces/ab/…        the crops, named from a hash of the source path and its stem
    DIR/manifest.csv      one row per crop, paths relative to DIR
    DIR/skipped.csv       one row per input that gave no crop, with the reason
    DIR/.lock             held while a run works on DIR

The log, the settings stamp and the lock are those of every resumable job (:mod:`mfclip.utils.jobs`).
Each source (image, video or input folder) is processed as a unit; its result is appended to
``progress.jsonl`` only after its crops are on disk, and ``manifest.csv`` / ``skipped.csv`` are rebuilt
atomically from that log at the end. A rerun reuses every logged source whose file is unchanged and whose
crops still exist, and the manifest covers every source ever processed into ``DIR``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from mfclip.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, load_image
from mfclip.data.manifest import parse_label, read_manifest, validate_manifest
from mfclip.data.paths import HIDDEN, INVALID_FOLDER_NAME, display_path, walk
from mfclip.data.video import VIDEO_EXTENSIONS, VideoDecodeError, is_video_path, sample_frames
from mfclip.face.alignment import cut_face, usable_faces
from mfclip.face.detectors import FaceBox, FaceDetector, get_detector
from mfclip.inputs import DEFAULT_FACE_MARGIN, FaceCropConfig
from mfclip.schema import LABEL_COLUMNS, MANIFEST_COLUMNS, SPLITS
from mfclip.utils.config import ConfigError, closest
from mfclip.utils.io import atomic_write, atomic_write_bytes, remove_temporaries
from mfclip.utils.jobs import AppendLog, JobError, JobLock, JsonLines, SettingsStamp

#: Columns the pipeline adds to describe each crop.
FACE_COLUMNS = (
    "source",
    "frame",
    "face_index",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "score",
)
#: The columns of the manifest the pipeline writes: the manifest columns, then those of the crop.
FACE_MANIFEST_COLUMNS = (*MANIFEST_COLUMNS, *FACE_COLUMNS)
SKIPPED_COLUMNS = ("source", "kind", "reason")

SETTINGS_FILE = "preprocess.json"
LOG_FILE = "progress.jsonl"
MANIFEST_FILE = "manifest.csv"
SKIPPED_FILE = "skipped.csv"
FACES_DIR = "faces"

# Sources whose result is final: a rerun reuses them. "failed" (an unexpected error) is retried.
_FINAL_STATUSES = ("ok", "skipped")


class PreprocessError(ValueError):
    """Preprocessing cannot start or continue; the message names the input, folder or setting."""


class PreprocessConfig(FaceCropConfig):
    """Settings of :func:`preprocess`: the face crop (:class:`~mfclip.inputs.FaceCropConfig`) and the run.

    The crop settings are what a model trained on the crops records as its input contract, so that
    serving cuts faces from photos the same way (:meth:`crop_settings`).
    """

    #: Box crops: the square's side is the box's longer side times ``1 + margin``.
    #: ``None``: 0.3 with a detector, 0 with ``detector="none"`` (the centred square as it is).
    margin: float | None = Field(default=None, ge=0)
    faces: Literal["largest", "all"] = "largest"
    #: Frames sampled uniformly from each video.
    frames: int = Field(default=32, ge=1)
    format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = Field(default=95, ge=1, le=100)
    #: Worker processes; ``None`` uses every available CPU core.
    workers: int | None = Field(default=None, ge=1)
    device: str = "cpu"
    #: Values for the manifest label columns of every input; with a manifest they fill only empty cells.
    labels: dict[str, str] = Field(default_factory=dict)
    progress: bool = True

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(labels) - set(LABEL_COLUMNS))
        if unknown:
            raise ValueError(f"unknown label column(s) {unknown}; valid: {list(LABEL_COLUMNS)}")
        result = {key: str(value) for key, value in labels.items() if value is not None}
        if "label" in result:
            result["label"] = normalize_label(result["label"], "labels.label")
        split = result.get("split", "")
        if split and split not in SPLITS:  # the manifest written would be invalid
            hint = closest(split.strip().lower(), SPLITS)
            suggestion = f"; did you mean {hint!r}?" if hint else ""
            raise ValueError(f"labels.split: split {split!r} is not one of {', '.join(SPLITS)}{suggestion}")
        return result

    @property
    def resolved_margin(self) -> float:
        if self.margin is not None:
            return self.margin
        return 0.0 if self.detector == "none" else DEFAULT_FACE_MARGIN

    def crop_settings(self) -> FaceCropConfig:
        """The face-crop settings of these crops, resolved (what a model trained on them records)."""
        fields = FaceCropConfig.model_fields
        return FaceCropConfig(
            **{name: getattr(self, name) for name in fields if name != "margin"},
            margin=self.resolved_margin,
        )

    def output_settings(self) -> dict[str, Any]:
        """The settings that shape the crops; an output folder keeps one set of them."""
        settings = {
            "detector": self.detector,
            "detector_options": self.detector_options,
            "size": self.size,
            "faces": self.faces,
            "frames": self.frames,
            "align": self.align,
            "min_score": self.min_score,
            "format": self.format,
        }
        if self.align == "none":
            settings["margin"] = self.resolved_margin
        else:
            settings["scale"] = self.scale
        if self.format == "jpg":
            settings["jpeg_quality"] = self.jpeg_quality
        return json.loads(json.dumps(settings, default=str))


def crop_settings_of(folder: str | Path) -> FaceCropConfig | None:
    """The face-crop settings of a preprocess output folder (from its ``preprocess.json``), or None.

    None means the folder was not written by :func:`preprocess`. Training reads this beside its manifest
    to record how its faces were cut (see ``docs/training.md``).
    """
    path = Path(folder) / SETTINGS_FILE
    try:
        settings = SettingsStamp(path, "mfclip-preprocess").read()
    except JobError as exc:
        raise PreprocessError(str(exc)) from None
    if settings is None:
        return None
    values = {name: settings[name] for name in FaceCropConfig.model_fields if name in settings}
    try:
        return FaceCropConfig.from_dict(values, source=str(path))
    except ConfigError as exc:
        raise PreprocessError(str(exc)) from None


def normalize_label(value: Any, where: str) -> str:
    """``0``/``1`` as strings from ``0``, ``1``, ``real``, ``fake`` (any case) or empty (unknown)."""
    text = str(value).strip()
    if text.lower() in ("", "nan", "none"):
        return ""
    label = parse_label(text, names=True)
    if label is None:
        raise PreprocessError(f"{where}: label {value!r} is not one of 0, 1, real, fake")
    return str(label)


SourceKind = Literal["image", "video", "folder"]


@dataclass(frozen=True)
class Source:
    """One input: an image or video file, or a folder (recorded so that empty folders are reported)."""

    path: Path  # absolute, resolved
    display: str  # as the user wrote it (input path or manifest cell); the manifest's ``source``
    kind: SourceKind
    labels: dict[str, str] = field(default_factory=dict)
    #: For folders: how many images and videos were found under it.
    files_found: int = 0
    #: Why the source cannot be used at all (e.g. a file name that is not valid UTF-8); empty when usable.
    problem: str = ""

    @property
    def key(self) -> str:
        return source_key(self.path)


@dataclass(frozen=True)
class PreprocessResult:
    """What a :func:`preprocess` run did. Counts refer to this run's sources, ``faces`` to the manifest."""

    out_dir: Path
    manifest_path: Path
    skipped_path: Path
    sources: int  # image and video files in this run's input
    processed: int  # decoded and searched for faces in this run
    resumed: int  # reused from an earlier run
    written: int  # crop files written in this run
    skipped: int  # sources and folders that gave no crop: the sum of the four counts below
    no_face: int  # files in which no face was found
    unreadable: int  # files that are missing, do not decode or cannot be named
    failed: int  # files that hit an unexpected error (retried by the next run)
    folders: int  # folders skipped: empty (no images or videos) or impossible to list
    faces: int  # rows in the manifest
    dropped_rows: int = 0  # rows of the input manifest dropped for their problems (``drop_invalid``)


def source_key(path: Path) -> str:
    """A stable 64-bit hex id of a source, from its absolute path."""
    return hashlib.sha1(os.fsencode(path.as_posix())).hexdigest()[:16]


def _safe_stem(display: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(display).stem)[:60].strip("._")
    return stem or "file"


def output_path(source: Source, frame: int | None, face_index: int, file_format: str) -> str:
    """The crop's path relative to the output folder (deterministic: same source, same name)."""
    base = f"{FACES_DIR}/{source.key[:2]}/{source.key}_{_safe_stem(source.display)}"
    if frame is None:
        return f"{base}_{face_index}.{file_format}"
    return f"{base}/{frame:06d}_{face_index}.{file_format}"


# --------------------------------------------------------------------------------------------- inputs


def sources_from_paths(
    paths: Iterable[str | Path], labels: dict[str, str] | None = None, exclude: Path | None = None
) -> list[Source]:
    """Expand files and folders (recursively; hidden entries and ``exclude`` skipped) into sources.

    Besides the files, every folder becomes a ``folder`` source whose ``files_found`` counts the images
    and videos below it, so that folders without any are reported; a folder inside an empty folder is
    left out (its parent already reports it). Folders that cannot be listed and names that are not valid
    UTF-8 become sources with a ``problem``, reported as skipped.
    """
    labels = {column: "" for column in LABEL_COLUMNS} | (labels or {})
    excluded = exclude.resolve() if exclude is not None else None
    sources: list[Source] = []
    for raw in paths:
        given = Path(raw)
        if not given.exists():
            raise PreprocessError(f"{raw}: input not found")
        if not given.is_dir():
            sources.append(Source(given.resolve(), str(raw), _kind_of(given), dict(labels)))
            continue
        folders, files, unusable = _walk(given, excluded)
        counts = dict.fromkeys(folders, 0)
        for relative in files:
            for parent in relative.parents:
                counts[parent] += 1
        for folder in folders:
            parent_count = counts.get(folder.parent, 0) if folder != Path(".") else 1
            if counts[folder] == 0 and parent_count == 0:
                continue
            display = str(raw) if folder == Path(".") else str(given / folder)
            sources.append(
                Source(
                    (given / folder).resolve(), display, "folder", dict(labels), files_found=counts[folder]
                )
            )
        for relative in files:
            file = given / relative
            sources.append(Source(file.resolve(), str(file), _kind_of(file), dict(labels)))
        for relative, kind, reason in unusable:
            entry = given / relative
            display = str(raw) if relative == Path(".") else display_path(entry)
            # Not resolved: the entry may be a link that loops or leads nowhere.
            sources.append(Source(Path(os.path.abspath(entry)), display, kind, dict(labels), problem=reason))
    return _unique(sources)


def _kind_of(path: Path) -> Literal["image", "video"]:
    return "video" if is_video_path(path) else "image"


def _walk(
    folder: Path, excluded: Path | None
) -> tuple[list[Path], list[Path], list[tuple[Path, SourceKind, str]]]:
    """Sub-folders (``.`` first) and image / video files below ``folder``, relative to it, sorted; and
    the entries that cannot be used: (relative path, kind, reason). The folder-walking rules (links,
    hidden entries) are those of :mod:`mfclip.data.paths`."""
    wanted = (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS)
    folders: list[Path] = [Path(".")]
    files: list[Path] = []
    unusable: list[tuple[Path, SourceKind, str]] = []

    def skip(path: Path, reason: str) -> None:
        is_folder = path == folder or os.path.isdir(path) or reason == INVALID_FOLDER_NAME
        if reason == HIDDEN or (not is_folder and not path.name.lower().endswith(wanted)):
            return  # hidden entries and files that are neither images nor videos are not inputs
        kind: SourceKind = "folder" if is_folder else _kind_of(path)
        unusable.append((path.relative_to(folder), kind, reason))

    for entry in walk(folder, skip, exclude=[excluded] if excluded is not None else ()):
        relative = entry.path.relative_to(folder)
        if entry.is_dir:
            folders.append(relative)
        elif entry.path.name.lower().endswith(wanted):
            files.append(relative)
    return folders, files, unusable


def _unique(sources: list[Source]) -> list[Source]:
    """Drop repeats of the same file (given twice, or inside two given folders); the first one wins."""
    seen: set[str] = set()
    unique = []
    for source in sources:
        if source.key not in seen:
            seen.add(source.key)
            unique.append(source)
    return unique


def sources_from_manifest(
    manifest: str | Path,
    root: str | Path | None = None,
    labels: dict[str, str] | None = None,
    drop_invalid: bool = False,
) -> tuple[list[Source], int]:
    """One source per manifest row (CSV or Parquet, needs a ``path`` column), keeping its other columns;
    and how many rows were dropped.

    Rows are checked as :func:`mfclip.data.manifest.validate_manifest` checks a manifest (without looking
    for the files): a path that is empty, absolute, escapes the root or repeats, a label other than 0, 1,
    real or fake, a split other than train, val or test. Empty label and split cells are allowed (unknown).
    Any problem refuses the manifest, listing every one with its row and column, unless ``drop_invalid``
    drops those rows. Paths resolve against ``root`` (default: the manifest's folder); ``labels`` fill
    empty cells.
    """
    manifest = Path(manifest)
    table = read_manifest(manifest)
    if "path" not in table.columns:
        raise PreprocessError(f"{manifest}: no 'path' column (columns: {list(table.columns)})")
    for column, value in (labels or {}).items():
        if column not in table.columns:
            table[column] = value
        else:
            table[column] = table[column].map(lambda cell, value=value: cell if str(cell).strip() else value)
    for column in LABEL_COLUMNS:
        if column not in table.columns:
            table[column] = ""
        table[column] = table[column].map(str)
    table["label"] = table["label"].map(_label_or_unchanged)
    bad_rows = _checked_rows(table, manifest, drop_invalid, SPLITS)

    base = Path(root) if root is not None else manifest.parent
    own = {"path", *FACE_COLUMNS}
    extras = [c for c in table.columns if c not in own and c not in LABEL_COLUMNS]
    sources = []
    for number, row in zip(table.index, table.to_dict("records"), strict=True):
        if number in bad_rows:
            continue
        cell = str(row["path"]).strip()
        row_labels = {column: str(row[column]) for column in (*LABEL_COLUMNS, *extras)}
        file = base / cell
        sources.append(Source(file.resolve(), cell, _kind_of(file), row_labels))
    return _unique(sources), len(bad_rows)


def _label_or_unchanged(value: str) -> str:
    """``0``/``1`` for a label :func:`normalize_label` accepts; anything else as it is, for validation."""
    try:
        return normalize_label(value, "")
    except PreprocessError:
        return value


def _checked_rows(table: Any, manifest: Path, drop_invalid: bool, splits: Sequence[str]) -> set[int]:
    """Rows of an input manifest with errors; raises listing them all unless ``drop_invalid``."""
    # Unknown (empty) label and split cells are allowed here: the check sees valid stand-ins for them.
    checked = table[["path", "label", "split"]].copy()
    checked["label"] = checked["label"].where(checked["label"] != "", "0")
    checked["split"] = checked["split"].where(checked["split"] != "", splits[0])
    checked.attrs = dict(table.attrs)
    report = validate_manifest(checked, check_files=False, prompt_set=None, source=str(manifest))
    if report.ok:
        return set()
    if report.table_errors or not drop_invalid:
        listed = "\n".join(f"  {problem}" for problem in report.errors)
        hint = "" if report.table_errors else "\nfix these rows, or pass --drop-invalid to skip them"
        raise PreprocessError(
            f"{manifest}: invalid input manifest, {len(report.errors)} problem(s) in "
            f"{len(report.bad_rows)} row(s):\n{listed}{hint}"
        )
    if len(report.bad_rows) == len(table):
        raise PreprocessError(f"{manifest}: every row has a problem; nothing left after dropping them")
    return set(report.bad_rows)


# --------------------------------------------------------------------------------------------- log


class ProgressLog:
    """The resume log: one JSON record per finished source (an :class:`~mfclip.utils.jobs.AppendLog`);
    the latest record of a source wins."""

    def __init__(self, path: Path) -> None:
        # Lines that do not parse (cut short by a crash in an older release) are skipped: redone.
        self.log = AppendLog(path, JsonLines(), strict=False)
        self.records: dict[str, dict[str, Any]] = {
            record["key"]: record for record in self.log.records() if "key" in record
        }

    def append(self, record: dict[str, Any]) -> None:
        self.log.open().append([record])
        self.records[record["key"]] = record

    def close(self) -> None:
        self.log.close()

    def compact(self) -> None:
        """Rewrite the log with only the latest record per source (atomically), dropping folder records
        that report nothing."""
        self.records = {
            key: record
            for key, record in self.records.items()
            if record.get("kind") != "folder" or record.get("status") != "ok"
        }
        self.log.rewrite(self.records[key] for key in sorted(self.records))


# --------------------------------------------------------------------------------------------- work


def _stat(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def _new_record(source: Source) -> dict[str, Any]:
    return {
        "key": source.key,
        "source": source.display,
        "kind": source.kind,
        "stat": _stat(source.path),
        "status": "ok",
        "reason": "",
        "labels": source.labels,
        "faces": [],
    }


def _skip(record: dict[str, Any], reason: str, status: str = "skipped") -> dict[str, Any]:
    record["status"] = status
    record["reason"] = reason
    return record


def _encode(crop: np.ndarray, file_format: str, jpeg_quality: int) -> bytes:
    import cv2

    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if file_format == "jpg" else []
    ok, buffer = cv2.imencode(f".{file_format}", bgr, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {file_format} image")
    return buffer.tobytes()


def _select(faces: list[FaceBox], config: PreprocessConfig) -> list[FaceBox]:
    kept = usable_faces(faces, config.min_score)
    return kept[:1] if config.faces == "largest" else kept


def process_source(
    source: Source, config: PreprocessConfig, detector: FaceDetector, out_dir: Path
) -> tuple[dict[str, Any], int]:
    """Crop the faces of one image or video into ``out_dir``; returns its log record and files written.

    Crops that already exist are not rewritten. Unreadable input and "no face" become a ``skipped``
    record; any other error a ``failed`` record (retried by the next run), so one bad file never stops a
    long job.
    """
    record = _new_record(source)
    if source.problem:
        return _skip(record, source.problem), 0
    if record["stat"] is None:
        return _skip(record, "file not found"), 0
    try:
        if source.kind == "video":
            frames: list[tuple[int | None, np.ndarray]] = list(sample_frames(source.path, config.frames))
        else:
            frames = [(None, np.asarray(load_image(source.path, name=source.display)))]
    except ImageDecodeError as exc:
        return _skip(record, f"unreadable image: {exc.reason}"), 0
    except VideoDecodeError as exc:
        return _skip(record, f"unreadable video: {exc.reason}"), 0
    except Exception as exc:
        return _skip(record, f"{type(exc).__name__}: {exc}", "failed"), 0

    written = 0
    crop = config.crop_settings()
    try:
        detections = detector.detect_batch([image for _, image in frames])
        for (frame, image), found in zip(frames, detections, strict=True):
            for face_index, face in enumerate(_select(found, config)):
                relative = output_path(source, frame, face_index, config.format)
                target = out_dir / relative
                if not target.exists():
                    pixels = cut_face(image, face, crop)
                    atomic_write_bytes(target, _encode(pixels, config.format, config.jpeg_quality))
                    written += 1
                record["faces"].append(
                    {
                        "path": relative,
                        "frame": frame,
                        "face_index": face_index,
                        "box": [round(v, 2) for v in (face.x0, face.y0, face.x1, face.y1)],
                        "score": round(face.score, 5),
                    }
                )
    except Exception as exc:
        record["faces"] = []
        return _skip(record, f"{type(exc).__name__}: {exc}", "failed"), written
    if not record["faces"]:
        where = (
            f" in {len(frames)} sampled frame{'s' if len(frames) != 1 else ''}"
            if source.kind == "video"
            else ""
        )
        return _skip(record, f"no face detected{where}"), written
    return record, written


def _reusable(record: dict[str, Any] | None, source: Source, out_dir: Path) -> bool:
    if record is None or record.get("status") not in _FINAL_STATUSES or record.get("kind") != source.kind:
        return False
    if record.get("stat") != _stat(source.path):
        return False
    return all((out_dir / face["path"]).exists() for face in record.get("faces", []))


def _folder_record(source: Source) -> dict[str, Any]:
    record = _new_record(source)
    record["stat"] = None
    if source.problem:
        _skip(record, source.problem)
    elif source.files_found == 0:
        _skip(record, "folder holds no images or videos")
    return record


# --------------------------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(config: PreprocessConfig, out_dir: str, threads: int) -> None:
    import cv2

    cv2.setNumThreads(threads)
    if config.detector == "mtcnn":
        import torch

        torch.set_num_threads(threads)
    _WORKER["config"] = config
    _WORKER["out_dir"] = Path(out_dir)
    _WORKER["detector"] = build_detector(config)


def _run_in_worker(source: Source) -> tuple[dict[str, Any], int]:
    return process_source(source, _WORKER["config"], _WORKER["detector"], _WORKER["out_dir"])


def build_detector(config: PreprocessConfig) -> FaceDetector:
    return get_detector(config.detector, device=config.device, **config.detector_options)


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def _run_all(
    sources: Sequence[Source], config: PreprocessConfig, out_dir: Path
) -> Iterator[tuple[dict[str, Any], int]]:
    """Process ``sources`` inline (one worker) or over a process pool; yields results as they finish."""
    if not sources:
        return
    workers = min(config.workers or available_cpus(), max(len(sources), 1))
    if workers <= 1:
        detector = build_detector(config)
        for source in sources:
            yield process_source(source, config, detector, out_dir)
        return

    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    build_detector(config)  # fail fast in this process on a bad detector or missing package
    threads = max(available_cpus() // workers, 1)
    # "spawn": forking a process that already runs torch / OpenMP threads can deadlock the children.
    context = multiprocessing.get_context("spawn")
    pending: dict[Any, Source] = {}
    queue = iter(sources)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(config, str(out_dir), threads),
    ) as pool:
        try:
            while True:
                while len(pending) < workers * 4:
                    source = next(queue, None)
                    if source is None:
                        break
                    pending[pool.submit(_run_in_worker, source)] = source
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.pop(future)
                    yield future.result()
        except BrokenProcessPool:
            names = ", ".join(sorted(s.display for s in pending.values())[:5])
            raise PreprocessError(
                f"a worker process died (out of memory?) while processing one of: {names}. Finished work is "
                "kept; rerun the same command to resume (with fewer --workers if memory is short)"
            ) from None
        finally:
            for future in pending:
                future.cancel()


# --------------------------------------------------------------------------------------------- main


def _check_settings(out_dir: Path, config: PreprocessConfig) -> None:
    SettingsStamp(out_dir / SETTINGS_FILE, "mfclip-preprocess").require(
        config.output_settings(),
        holder=out_dir,
        what="crops",
        advice="use another output folder, or the same settings to resume",
    )


def preprocess(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: PreprocessConfig | None = None,
    *,
    manifest: str | Path | None = None,
    root: str | Path | None = None,
    drop_invalid: bool = False,
) -> PreprocessResult:
    """Detect and crop faces in ``inputs`` (image / video files and folders, searched recursively) or in
    the rows of ``manifest``; write the crops, ``manifest.csv`` and ``skipped.csv`` under ``out_dir``.

    A manifest with invalid rows is refused, listing them, unless ``drop_invalid`` skips those rows.

    Resumable: rerunning the same command reuses finished sources and writes nothing new.
    """
    config = config or PreprocessConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PreprocessError(f"{out_dir}: output path exists and is not a folder")
    if manifest is None and not inputs:
        raise PreprocessError("nothing to preprocess: give input files or folders, or a manifest")
    if manifest is not None and inputs:
        raise PreprocessError("give either input paths or a manifest, not both")
    dropped_rows = 0
    if manifest is not None:
        sources, dropped_rows = sources_from_manifest(manifest, root, config.labels, drop_invalid)
    else:
        sources = sources_from_paths(inputs, config.labels, exclude=out_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    with JobLock.in_folder(out_dir, "preprocess"):
        _check_settings(out_dir, config)
        # Temporary files of crops and outputs whose write a killed run never finished.
        remove_temporaries(out_dir)
        remove_temporaries(out_dir / FACES_DIR, recursive=True)
        result = _preprocess_locked(sources, out_dir, config)
    return dataclasses.replace(result, dropped_rows=dropped_rows)


def _preprocess_locked(sources: list[Source], out_dir: Path, config: PreprocessConfig) -> PreprocessResult:
    log = ProgressLog(out_dir / LOG_FILE)
    files = [s for s in sources if s.kind != "folder"]
    counts = dict.fromkeys(("processed", "resumed", "written", "skipped", *_SKIP_OUTCOMES), 0)

    def count_skip(record: dict[str, Any]) -> None:
        outcome = _skip_outcome(record)
        if outcome is not None:
            counts["skipped"] += 1
            counts[outcome] += 1

    todo: list[Source] = []
    try:
        for source in sources:
            previous = log.records.get(source.key)
            if source.kind == "folder":
                # Only empty folders are logged, plus the record that clears an earlier "empty".
                record = _folder_record(source)
                if (previous is None and record["status"] != "ok") or (
                    previous is not None and _differs(previous, record, ("status", "reason", "source"))
                ):
                    log.append(record)
                count_skip(record)
            elif _reusable(previous, source, out_dir):
                assert previous is not None
                counts["resumed"] += 1
                count_skip(previous)
                if previous.get("labels") != source.labels or previous.get("source") != source.display:
                    log.append({**previous, "labels": source.labels, "source": source.display})
            else:
                todo.append(source)

        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc="preprocess", unit="file", disable=not config.progress) as bar:
            for record, written in _run_all(todo, config, out_dir):
                log.append(record)
                counts["processed"] += 1
                counts["written"] += written
                count_skip(record)
                bar.update(1)
                bar.set_postfix(skipped=counts["skipped"], refresh=False)
    finally:
        log.close()

    faces = _write_tables(log.records, out_dir)
    log.compact()
    return PreprocessResult(
        out_dir=out_dir,
        manifest_path=out_dir / MANIFEST_FILE,
        skipped_path=out_dir / SKIPPED_FILE,
        sources=len(files),
        faces=faces,
        **counts,
    )


_SKIP_OUTCOMES = ("no_face", "unreadable", "failed", "folders")


def _skip_outcome(record: dict[str, Any]) -> str | None:
    """Which of :data:`_SKIP_OUTCOMES` a log record counts as; None when it gave crops."""
    if record.get("status") == "ok":
        return None
    if record.get("kind") == "folder":
        return "folders"
    if record.get("status") == "failed":
        return "failed"
    return "no_face" if str(record.get("reason", "")).startswith("no face") else "unreadable"


def _differs(a: dict[str, Any], b: dict[str, Any], keys: Sequence[str]) -> bool:
    return any(a.get(key) != b.get(key) for key in keys)


def manifest_rows(records: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Manifest rows (sorted by source, frame, face) and their columns, from log records."""
    rows: list[dict[str, Any]] = []
    extras: list[str] = []
    for record in records.values():
        if record.get("status") != "ok":
            continue
        labels = dict(record.get("labels") or {})
        if record["kind"] == "video" and not labels.get("video_id"):
            labels["video_id"] = record["source"]
        for column in labels:
            if column not in LABEL_COLUMNS and column not in extras:
                extras.append(column)
        for face in record["faces"]:
            x0, y0, x1, y1 = face["box"]
            rows.append(
                {
                    **{column: labels.get(column, "") for column in LABEL_COLUMNS},
                    **{column: value for column, value in labels.items() if column not in LABEL_COLUMNS},
                    "path": face["path"],
                    "source": record["source"],
                    "frame": "" if face["frame"] is None else face["frame"],
                    "face_index": face["face_index"],
                    "box_x0": x0,
                    "box_y0": y0,
                    "box_x1": x1,
                    "box_y1": y1,
                    "score": face["score"],
                }
            )
    rows.sort(key=lambda r: (r["source"], -1 if r["frame"] == "" else r["frame"], r["face_index"], r["path"]))
    return rows, [*FACE_MANIFEST_COLUMNS, *sorted(extras)]


def _write_tables(records: dict[str, dict[str, Any]], out_dir: Path) -> int:
    rows, columns = manifest_rows(records)
    with atomic_write(out_dir / MANIFEST_FILE) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    skipped = sorted(
        (
            {"source": r["source"], "kind": r["kind"], "reason": r["reason"]}
            for r in records.values()
            if r["status"] != "ok"
        ),
        key=lambda r: (r["source"], r["kind"]),
    )
    with atomic_write(out_dir / SKIPPED_FILE) as handle:
        writer = csv.DictWriter(handle, fieldnames=SKIPPED_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(skipped)
    return len(rows)


__all__ = [
    "FACE_MANIFEST_COLUMNS",
    "PreprocessConfig",
    "PreprocessError",
    "PreprocessResult",
    "Source",
    "normalize_label",
    "output_path",
    "preprocess",
    "process_source",
    "sources_from_manifest",
    "sources_from_paths",
]
