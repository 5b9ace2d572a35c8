"""Score many files (images, folders, videos) into a CSV or JSONL table, incrementally and resumably.

One row per input: ``path, p_fake, label, p_fake_max, frames, box, error``. Images give ``p_fake``; videos
give the mean over sampled frames as ``p_fake``, the maximum as ``p_fake_max`` and the number of frames
scored as ``frames``. ``label`` is ``fake`` when ``p_fake >= threshold``, else ``real``. A file that cannot
be scored gets a row with ``error`` set and the run goes on.

On one device the loop is plain: a DataLoader decodes and preprocesses in worker processes, the model
scores each batch, and rows are appended and flushed per batch. With several devices or nodes the same
dataset runs through Lightning's ``Trainer.predict``; each rank appends to its own shard file and rank 0
merges the shards into the output at the end.

The output file is the job's append log (:mod:`mfclip.utils.jobs`): ``OUT.settings.json`` stamps the
checkpoint and options that made its rows (``--resume`` with others is refused), and ``OUT.lock`` is held
while a run writes to it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mfclip.data.decode import ImageDecodeError, is_image_path
from mfclip.data.paths import BROKEN_LINK, INVALID_FILE_NAME, LINK_LOOP, walk_files
from mfclip.data.video import VideoDecodeError, is_video_path
from mfclip.inference.preprocess import Preprocessor
from mfclip.schema import class_name
from mfclip.utils.jobs import AppendLog, CsvRows, JobError, JobLock, JsonLines, SettingsStamp

OUTPUT_COLUMNS = ("path", "p_fake", "label", "p_fake_max", "frames", "box", "error")
OUTPUT_SUFFIXES = (".csv", ".jsonl")


class PredictOutputError(ValueError):
    """The output file cannot be used (wrong suffix, exists without --resume, written by another tool)."""


@dataclass
class PredictOptions:
    """How :func:`predict_files` runs."""

    threshold: float = 0.5
    batch_size: int = 32
    frames: int = 16  # frames sampled per video
    num_workers: int | None = None  # DataLoader workers; None picks by job size
    resume: bool = False  # skip paths already in the output
    overwrite: bool = False  # replace an existing output instead of refusing
    devices: int = 1  # >1, or -1 for every device of the node (or num_nodes > 1): Lightning's Trainer.predict
    num_nodes: int = 1
    accelerator: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers (--workers) must be >= 0, got {self.num_workers}")
        if self.resume and self.overwrite:
            raise ValueError(
                "resume (--resume) and overwrite (--overwrite) exclude each other: one continues the "
                "output, the other replaces it"
            )
        if (self.devices < 1 and self.devices != -1) or self.num_nodes < 1:
            raise ValueError(
                f"devices must be >= 1 or -1 (all), and num_nodes >= 1; "
                f"got devices={self.devices}, num_nodes={self.num_nodes}"
            )

    @property
    def distributed(self) -> bool:
        return self.devices != 1 or self.num_nodes > 1


@dataclass
class PredictSummary:
    """What a run did: inputs found, already done (resume), newly written rows, and rows with errors."""

    inputs: int
    skipped: int
    written: int
    errors: int
    out: Path | None
    error_examples: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------
# Inputs


def collect_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Expand files and folders (recursively: images and videos by extension) into a list of paths.

    Files named explicitly are kept whatever their extension (a non-image then gets an error row);
    missing paths are kept too, so they get an error row rather than vanishing. Folders are walked by
    the rules of :mod:`mfclip.data.paths` (links followed, hidden entries left out). A file reached twice
    (given relative and absolute, or inside two given folders) is listed once, as first reached.
    """
    paths: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        path = Path(item)
        found = sorted(str(p) for p in _media_files(path)) if path.is_dir() else [str(path)]
        for p in found:
            key = os.path.abspath(p)
            if key not in seen:
                seen.add(key)
                paths.append(p)
    return paths


def _media_files(folder: Path) -> list[Path]:
    """Images and videos below ``folder`` by the folder-walking rules of :mod:`mfclip.data.paths`. Also
    kept: a name that is not valid UTF-8 (the output writes such names byte for byte), and a broken or looping
    link with an image or video name, so that it gets an error row."""
    found = []

    def keep(path: Path, reason: str) -> None:
        if reason in (BROKEN_LINK, LINK_LOOP, INVALID_FILE_NAME) and _is_media(path):
            found.append(path)

    found.extend(p for p in walk_files(folder, keep) if _is_media(p))
    return found


def _is_media(path: Path) -> bool:
    return is_image_path(path) or is_video_path(path)


@dataclass
class _Item:
    """One input after loading: its frames (one for an image) or the reason it failed."""

    path: str
    images: torch.Tensor | None  # (n, 3, S, S)
    box: tuple[int, int, int, int] | None = None
    is_video: bool = False
    error: str | None = None


class _InputDataset(Dataset):
    def __init__(self, paths: Sequence[str], preprocessor: Preprocessor, frames: int) -> None:
        self.paths = list(paths)
        self.preprocessor = preprocessor
        self.frames = frames

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Item:
        path = self.paths[index]
        try:
            if is_video_path(path):
                tensors = self.preprocessor.prepare_video(path, self.frames)
                return _Item(path, tensors, is_video=True)
            prepared = self.preprocessor(self.preprocessor.load(path))
            return _Item(path, prepared.tensor.unsqueeze(0), box=prepared.box)
        except (ImageDecodeError, VideoDecodeError) as exc:
            return _Item(path, None, is_video=is_video_path(path), error=exc.reason)
        except Exception as exc:
            return _Item(path, None, is_video=is_video_path(path), error=f"{type(exc).__name__}: {exc}")


def _collate(items: list[_Item]) -> dict[str, Any]:
    tensors = [item.images for item in items if item.images is not None]
    images = torch.cat(tensors) if tensors else torch.empty(0)
    meta = [
        {
            "path": item.path,
            "count": 0 if item.images is None else int(item.images.shape[0]),
            "box": item.box,
            "is_video": item.is_video,
            "error": item.error,
        }
        for item in items
    ]
    return {"images": images, "items": meta}


def _rows(items: list[dict[str, Any]], scores: torch.Tensor, threshold: float) -> list[dict[str, Any]]:
    """Turn per-frame scores back into one row per input."""
    rows = []
    offset = 0
    values = scores.float().cpu().tolist()
    for item in items:
        count = item["count"]
        row: dict[str, Any] = {column: None for column in OUTPUT_COLUMNS}
        row["path"] = item["path"]
        if item["error"] is not None:
            row["error"] = " ".join(str(item["error"]).split())  # one line, whatever the message
        else:
            frame_scores = values[offset : offset + count]
            offset += count
            p_fake = sum(frame_scores) / len(frame_scores)
            row["p_fake"] = p_fake
            row["label"] = class_name(p_fake, threshold)
            if item["is_video"]:
                row["p_fake_max"] = max(frame_scores)
                row["frames"] = count
            if item["box"] is not None:
                row["box"] = list(item["box"])
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------
# Output


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise PredictOutputError(
            f"{path}: output must end in .csv or .jsonl, not {suffix or '(no suffix)'!r}"
        )
    return suffix[1:]


def _record_format(path: Path) -> CsvRows | JsonLines:
    return CsvRows(OUTPUT_COLUMNS, format_value=_csv_value) if _format_of(path) == "csv" else JsonLines()


def output_log(path: Path) -> AppendLog:
    """The output file (or a shard) as the job's append log."""
    return AppendLog(path, _record_format(path), hint="not an mfclip prediction file; choose another --out")


class _StdoutRows:
    """CSV rows on standard output, flushed after every batch."""

    def __init__(self) -> None:
        self.format = CsvRows(OUTPUT_COLUMNS, format_value=_csv_value)
        sys.stdout.write(self.format.header)
        sys.stdout.flush()

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        sys.stdout.write(self.format.encode(rows))
        sys.stdout.flush()

    def close(self) -> None:
        pass


def _csv_value(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column in ("p_fake", "p_fake_max"):
        return f"{float(value):.6f}"
    if column == "box":
        return " ".join(str(int(v)) for v in value)
    return value


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Complete rows of an output file, as written (CSV cells are text; a torn last line is left out)."""
    return list(output_log(path).records())


def _shard_paths(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}.part-*{out.suffix}"))


def _shard_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.part-{rank}{out.suffix}")


def _stamp(out: Path) -> SettingsStamp:
    return SettingsStamp(out.with_name(f"{out.name}.settings.json"), "mfclip-predict")


def prediction_settings(detector: Any, options: PredictOptions) -> dict[str, Any]:
    """What shapes the rows of an output: the weights, the input preprocessing and the options that
    change scores or labels (not batch size, workers or devices)."""
    from mfclip.models.checkpoint import checkpoint_fingerprint

    preprocessor = detector.preprocessor
    transform = getattr(preprocessor.transform, "config", None)
    return {
        "checkpoint": checkpoint_fingerprint(detector.checkpoint) if detector.checkpoint else None,
        "model": type(detector.model).__name__,
        "image_size": preprocessor.image_size,
        "transform": transform.to_dict() if transform is not None else None,
        "face_detector": preprocessor.face_detector,
        "max_pixels": preprocessor.max_pixels,
        "dtype": str(detector.dtype).removeprefix("torch."),
        "threshold": options.threshold,
        "frames": options.frames,
    }


def _started_in(out: Path) -> str:
    """The working directory ``out`` was started in (``OUT.settings.json``): relative paths in its rows
    are relative to it. The current one for an output without that record."""
    try:
        workdir = _stamp(out).context().get("workdir")
    except JobError:
        workdir = None
    return workdir if isinstance(workdir, str) else os.getcwd()


def _path_key(path: str, base: str) -> str:
    """The file a row's ``path`` names, however it was written (relative to ``base`` or absolute, with
    ``./`` or ``..``): what resuming compares."""
    return os.path.normpath(os.path.join(base, path))


def done_paths(out: Path) -> set[str]:
    """The files (as :func:`path_key`) already scored in ``out`` or in leftover shards of an interrupted
    multi-device run. The rows are read one at a time."""
    base = _started_in(out)
    done: set[str] = set()
    for log in (out, *_shard_paths(out)):
        done.update(_path_key(row["path"], base) for row in output_log(log).records())
    return done


def merge_shards(out: Path) -> int:
    """Append the rows of every shard to ``out`` (skipping files already there), then delete the shards."""
    shards = _shard_paths(out)
    if not shards:
        return 0
    base = _started_in(out)
    log = output_log(out)
    present = {_path_key(row["path"], base) for row in log.records()}
    merged = 0
    with log:
        for shard in shards:
            batch: list[dict[str, Any]] = []
            for row in output_log(shard).records():
                key = _path_key(row["path"], base)
                if key not in present:
                    present.add(key)
                    batch.append(_parse_row(row))
                if len(batch) >= 4096:
                    log.append(batch)
                    merged += len(batch)
                    batch = []
            log.append(batch)
            merged += len(batch)
    for shard in shards:
        shard.unlink()
    return merged


def _parse_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back from CSV (all strings) in the typed form the writer takes."""
    if isinstance(row.get("p_fake"), str) or isinstance(row.get("frames"), str):
        parsed: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
        for key in ("p_fake", "p_fake_max"):
            if parsed.get(key) is not None:
                parsed[key] = float(parsed[key])
        if parsed.get("frames") is not None:
            parsed["frames"] = int(parsed["frames"])
        if parsed.get("box") is not None:
            parsed["box"] = [int(v) for v in str(parsed["box"]).split()]
        return parsed
    return row


# ----------------------------------------------------------------------------------------------------
# Running


def _auto_workers(num_items: int, batch_size: int) -> int:
    if num_items <= batch_size:
        return 0  # a single batch: starting worker processes costs more than it saves
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // 2))


def _worker_init(_: int) -> None:
    # Workers only decode and resize; one thread each keeps them from starving the model.
    torch.set_num_threads(1)


def _loader(
    dataset: _InputDataset, options: PredictOptions, items_per_batch: int, pin_memory: bool = False
) -> DataLoader:
    workers = options.num_workers
    if workers is None:
        workers = _auto_workers(len(dataset), items_per_batch)
    return DataLoader(
        dataset,
        batch_size=items_per_batch,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=2 if workers > 0 else None,
        pin_memory=pin_memory,
    )


def _check_output(out: Path | None, options: PredictOptions) -> None:
    if out is None:
        if options.resume:
            raise PredictOutputError("--resume needs --out (there is nothing to resume from on stdout)")
        if options.distributed:
            raise PredictOutputError("prediction on several devices needs --out for its shard files")
        return
    _format_of(out)
    exists = out.exists() and out.stat().st_size > 0
    if not options.resume and (exists or _shard_paths(out)) and not options.overwrite:
        raise PredictOutputError(
            f"{out}: already exists; pass --resume to continue it or --overwrite to replace it"
        )


def _reset_output(out: Path) -> None:
    out.unlink(missing_ok=True)
    for shard in _shard_paths(out):
        shard.unlink()
    _stamp(out).remove()


def predict_files(
    detector: Any,
    inputs: Iterable[str | Path],
    out: str | Path | None = None,
    options: PredictOptions | None = None,
) -> PredictSummary:
    """Score every image and video under ``inputs`` with ``detector`` (a :class:`~mfclip.Detector`).

    Rows are appended to ``out`` (``.csv`` or ``.jsonl``; CSV on stdout when None) and flushed after
    every batch, so an interrupted run loses nothing and ``options.resume`` continues it.
    """
    options = options or PredictOptions()
    out_path = Path(out) if out is not None else None
    paths = collect_inputs(inputs)
    _check_output(out_path, options)
    # Only rank 0 (or a single process) changes an existing output; other ranks of a relaunched job must not.
    first_rank = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    if out_path is None or not first_rank:
        return _predict_pending(detector, paths, out_path, options, first_rank)
    with JobLock.beside(out_path, "predict"):
        settings = prediction_settings(detector, options)
        context = {"workdir": os.getcwd()}  # what relative paths in the rows are relative to
        if options.resume:
            _stamp(out_path).require(
                settings,
                holder=out_path,
                what="rows",
                advice="resume with the same checkpoint and options, or write to another --out",
                context=context,
            )
            if not options.distributed:
                merge_shards(out_path)  # rows left behind by an interrupted multi-device run
        else:
            _reset_output(out_path)
            _stamp(out_path).write(settings, context)
        return _predict_pending(detector, paths, out_path, options, first_rank)


def _predict_pending(
    detector: Any, paths: list[str], out_path: Path | None, options: PredictOptions, first_rank: bool
) -> PredictSummary:
    """Score the ``paths`` that the output does not hold yet."""
    pending = paths
    if out_path is not None and options.resume:
        done, here = done_paths(out_path), os.getcwd()
        pending = [p for p in paths if _path_key(p, here) not in done]
        if _started_in(out_path) != here:  # keep the output's relative paths relative to one folder
            pending = [p if os.path.isabs(p) else _path_key(p, here) for p in pending]
    summary = PredictSummary(
        inputs=len(paths), skipped=len(paths) - len(pending), written=0, errors=0, out=out_path
    )
    if not pending:
        if out_path is not None and options.resume and first_rank:
            merge_shards(out_path)
        if first_rank:
            _write_header_only(out_path)
        return summary
    has_video = any(is_video_path(p) for p in pending)
    items_per_batch = max(1, options.batch_size // options.frames) if has_video else options.batch_size
    dataset = _InputDataset(pending, detector.preprocessor, options.frames)
    on_gpu = options.distributed or getattr(detector.device, "type", "cpu") == "cuda"
    loader = _loader(dataset, options, items_per_batch, pin_memory=on_gpu and torch.cuda.is_available())
    if options.distributed:
        assert out_path is not None
        return _predict_distributed(detector, loader, out_path, options, summary)
    return _predict_local(detector, loader, out_path, options, summary)


def _write_header_only(out: Path | None) -> None:
    """Leave a valid (header-only) output when there was nothing to score, so readers and --resume work."""
    if out is None:
        _StdoutRows()
    elif not out.exists():
        output_log(out).open().close()


def _count(summary: PredictSummary, rows: list[dict[str, Any]]) -> None:
    summary.written += len(rows)
    for row in rows:
        if row["error"] is not None:
            summary.errors += 1
            if len(summary.error_examples) < 5:
                summary.error_examples.append(f"{row['path']}: {row['error']}")


def _predict_local(
    detector: Any, loader: DataLoader, out: Path | None, options: PredictOptions, summary: PredictSummary
) -> PredictSummary:
    from tqdm.auto import tqdm

    writer: AppendLog | _StdoutRows = output_log(out).open() if out is not None else _StdoutRows()
    progress = tqdm(
        total=len(loader.dataset),  # type: ignore[arg-type]
        unit="file",
        desc="predict",
        disable=not options.progress,
        file=sys.stderr,
    )
    try:
        for batch in loader:
            images = batch["images"]
            scores = detector.score(images) if images.numel() else torch.empty(0)
            rows = _rows(batch["items"], scores, options.threshold)
            writer.append(rows)
            _count(summary, rows)
            progress.update(len(rows))
    finally:
        progress.close()
        writer.close()
    return summary


def _precision_for(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16-true", torch.float16: "16-true"}.get(dtype, "32-true")


def _predict_distributed(
    detector: Any, loader: DataLoader, out: Path, options: PredictOptions, summary: PredictSummary
) -> PredictSummary:
    import lightning as L
    from lightning.pytorch.callbacks import BasePredictionWriter

    threshold = options.threshold

    class _Scorer(L.LightningModule):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
            images = batch["images"]
            scores = self.net(images) if images.numel() else images.new_empty(0)
            return _rows(batch["items"], scores, threshold)

    class _ShardWriter(BasePredictionWriter):
        def __init__(self) -> None:
            super().__init__(write_interval="batch")
            self.writer: AppendLog | None = None
            self.lock: JobLock | None = None

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dl_idx):  # type: ignore[no-untyped-def]
            if self.writer is None:
                shard = _shard_path(out, trainer.global_rank)
                self.lock = JobLock.beside(shard, "predict").acquire()
                self.writer = output_log(shard).open()
            self.writer.append(prediction)
            _count(summary, prediction)

        def on_predict_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    trainer = L.Trainer(
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy="ddp",
        precision=_precision_for(detector.dtype),  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=options.progress,
        callbacks=[_ShardWriter()],
    )
    trainer.predict(_Scorer(detector.model.inference_module()), dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    if trainer.is_global_zero:
        merge_shards(out)
        # Report the whole job, not only this rank's share.
        pending = set(loader.dataset.paths)  # type: ignore[attr-defined]
        merged = PredictSummary(summary.inputs, summary.skipped, 0, 0, out)
        _count(merged, [row for row in iter_rows(out) if row["path"] in pending])
        summary = merged
    trainer.strategy.barrier()
    return summary


def iter_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """The rows of a prediction file, typed (floats, ints, box lists; None for empty cells), read one
    at a time."""
    for row in output_log(Path(path)).records():
        yield _parse_row(row)
