"""Evaluate a checkpoint on a protocol's test sets (or on one manifest), clean and degraded.

For every test set, images are scored in batches and each batch's scores are appended to a log
(``<test_set>/.partial/scores.csv``, stamped with the checkpoint, rows and degradation that produce
them), so memory stays bounded and an interrupted evaluation resumes where it stopped. When a test set
is complete its predictions, metrics, report and plots are written by
:func:`mfclip.metrics.write_evaluation`, and a stamp (``<test_set>/eval_state.json``) records which
checkpoint, rows and degradation produced it. A later call skips stamped test sets, recomputes only
the metrics when just the metric settings changed, and rescores a test set whose checkpoint or rows
changed. The run-level report (and ``robustness.md`` when degradations were applied) is rewritten at
the end. One evaluation at a time holds ``<out>/.lock``. The log, stamps and lock are those of every
resumable job (:mod:`mfclip.utils.jobs`). Layout: ``docs/evaluation.md``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfclip.data.manifest import spreadsheet_row
from mfclip.data.transforms import ImageTransform
from mfclip.engine import runinfo
from mfclip.engine.protocol import Perturbation, Protocol, RowSelector, load_protocol
from mfclip.engine.robustness import perturbed_name, resolve_perturbations, robustness_table
from mfclip.metrics import (
    DEFAULT_GROUP_BY,
    evaluate_predictions,
    safe_name,
    write_evaluation,
    write_run_report,
)
from mfclip.metrics.grouped import check_group_by
from mfclip.metrics.report import METRICS_FILE, PREDICTIONS_FILES, read_metrics
from mfclip.models.metadata import CheckpointMetadata
from mfclip.schema import DESCRIPTIVE_COLUMNS
from mfclip.utils.config import ConfigError
from mfclip.utils.io import atomic_write_json, atomic_write_text, remove_temporaries
from mfclip.utils.jobs import AppendLog, CsvRows, JobError, JobLock, SettingsStamp, setting_changes

logger = logging.getLogger(__name__)

STATE_NAME = "eval_state.json"
PARTIAL_DIR = ".partial"
SCORES_LOG = "scores.csv"  # in PARTIAL_DIR: one record per scored row
SCORES_STAMP = "settings.json"  # in PARTIAL_DIR: what the logged scores were made with
PREDICTIONS_FILE = PREDICTIONS_FILES[0]  # evaluate writes parquet
UNREADABLE_FILE = "unreadable.csv"
EVALUATION_FILE = "evaluation.json"
# Manifest columns copied into predictions (after path, label, p_fake), when the manifest has them.
PREDICTION_COLUMNS = ("split", *DESCRIPTIVE_COLUMNS)


class EvaluationError(ValueError):
    """An evaluation cannot run (no test set, empty selection, unusable output directory)."""


@dataclass
class TestSet:
    """One set of manifest rows to score, optionally under a degradation."""

    name: str
    rows: pd.DataFrame  # manifest rows; the index is the manifest row number
    root: Path
    manifest: Path
    perturbation: Perturbation | None = None

    def perturbed(self, perturbation: Perturbation) -> TestSet:
        return TestSet(
            perturbed_name(self.name, perturbation), self.rows, self.root, self.manifest, perturbation
        )


@dataclass
class EvalResult:
    """What :func:`evaluate` did: metrics by test set and where everything was written."""

    out_dir: Path
    metrics: dict[str, dict[str, Any]]
    checkpoint: Path | None = None  # the checkpoint scored (RUN/best when given a run directory)
    scored: list[str] = field(default_factory=list)  # test sets scored by this call
    resumed: list[str] = field(default_factory=list)  # complete before this call: skipped
    files: dict[str, Path] = field(default_factory=dict)  # run-level files: metrics, report, roc, robustness

    def value(self, test_set: str, metric: str = "auc") -> float:
        """One overall metric of one test set (NaN when undefined)."""
        if test_set not in self.metrics:
            raise KeyError(f"no test set {test_set!r}; test sets: {list(self.metrics)}")
        value = self.metrics[test_set]["overall"].get(metric)
        return float("nan") if value is None else float(value)

    def table(self, metrics: Sequence[str] = ("auc", "ap", "eer", "acc")) -> pd.DataFrame:
        """Overall metrics as a table: one row per test set."""
        rows = [
            {"test_set": name, **{m: self.value(name, m) for m in metrics}, "n": values["overall"].get("n")}
            for name, values in self.metrics.items()
        ]
        return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Test sets
# ---------------------------------------------------------------------------------------------------


def build_test_sets(
    protocol: Protocol | str | Path | None = None,
    manifest: str | Path | None = None,
    *,
    variant: str | None = None,
    data_dir: str | Path | None = None,
    root: str | Path | None = None,
    split: str | Sequence[str] = "test",
    perturb: Iterable[str] | None = None,
) -> list[TestSet]:
    """The test sets to score: a protocol's (``variant`` applied), or the ``split`` rows of one manifest.

    With a protocol, ``manifest`` replaces its only manifest (a protocol with several manifests resolves
    them against ``data_dir``). Each clean test set is followed by one copy per degradation: the
    protocol's ``robustness`` list when ``perturb`` is None, else the named ones (see
    :func:`~mfclip.engine.robustness.resolve_perturbations`).
    """
    from mfclip.data.manifest import load_manifest

    if protocol is None and manifest is None:
        raise EvaluationError("give a protocol or a manifest to evaluate on")
    cache: dict[Path, pd.DataFrame] = {}

    def rows_of(path: Path) -> pd.DataFrame:
        if path not in cache:
            if not path.is_file():
                raise EvaluationError(f"{path}: manifest not found")
            cache[path] = load_manifest(path, root, check_files=False)
        return cache[path]

    def root_of(path: Path) -> Path:
        return Path(root) if root is not None else path.parent

    sets: list[TestSet] = []
    available: list[Perturbation] = []
    if protocol is not None:
        proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
        proto = proto.variant(variant)
        available = list(proto.robustness)
        if not proto.test:
            raise EvaluationError(f"protocol {proto.name!r} defines no test sets")
        keys = sorted(proto.manifests) or ["default"]
        if manifest is not None and len(keys) > 1:
            raise EvaluationError(
                f"protocol {proto.name!r} reads {len(keys)} manifests ({', '.join(keys)}); pass --data-dir "
                "instead of --manifest"
            )
        for name, selector in proto.test.items():
            path = (
                Path(manifest) if manifest is not None else proto.manifest_path(selector.manifest, data_dir)
            )
            selected = proto.select(f"test.{name}", rows_of(path))
            # Its AUC would be undefined: say so now rather than after scoring.
            if selector.include_fake and not (selected["label"] == 1).any():
                raise EvaluationError(
                    f"test set {name!r} of protocol {proto.name!r} selects no fake rows of {path} "
                    f"({selector.describe()})"
                )
            sets.append(TestSet(name, selected, root_of(path), path))
    else:
        assert manifest is not None
        path = Path(manifest)
        splits = [split] if isinstance(split, str) else list(split)
        selector = RowSelector.from_dict(
            {"split": None if "all" in splits else splits}, source=f"--split {' '.join(splits)}"
        )
        selected = selector.select(rows_of(path))
        name = "all" if "all" in splits else "_".join(splits)  # "+" marks degraded copies
        sets.append(TestSet(name, selected, root_of(path), path))
    perturbations = resolve_perturbations(perturb, available)
    return [s for clean in sets for s in (clean, *(clean.perturbed(p) for p in perturbations))]


# ---------------------------------------------------------------------------------------------------
# Checkpoints and output directories
# ---------------------------------------------------------------------------------------------------


def default_eval_dir(checkpoint: str | Path) -> Path:
    """``RUN/eval`` for a run's checkpoint (``RUN/best`` or ``RUN/checkpoints/*.ckpt``), else
    ``<checkpoint>-eval`` beside it."""
    path = Path(checkpoint)
    if path.is_file() and path.parent.name == runinfo.CHECKPOINT_DIR:
        return path.parent.parent / runinfo.EVAL_DIR
    if path.name == runinfo.BEST_DIR and runinfo.is_run_dir(path.parent):
        return path.parent / runinfo.EVAL_DIR
    return path.with_name(f"{path.name}-eval")


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint ``path`` names: itself, or ``RUN/best`` for a training run directory ``RUN``."""
    from mfclip.models.checkpoint import CONFIG_NAME

    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: no such checkpoint")
    if not path.is_dir() or (path / CONFIG_NAME).is_file() or not runinfo.is_run_dir(path):
        return path
    best = path / runinfo.BEST_DIR
    if not best.is_dir():
        last = path / runinfo.CHECKPOINT_DIR / runinfo.LAST_CHECKPOINT
        raise EvaluationError(
            f"{path}: this training run has no {runinfo.BEST_DIR}/ model yet (it never validated); pass a "
            f"Lightning checkpoint instead, e.g. --checkpoint {last}"
        )
    logger.info("%s is a training run: evaluating its best model %s", path, best)
    return best


def _rows_digest(test_set: TestSet) -> str:
    digest = hashlib.sha256()
    digest.update(np.asarray(test_set.rows.index, dtype=np.int64).tobytes())
    digest.update("\n".join(test_set.rows["path"].astype(str)).encode("utf-8"))
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Scorer:
    """Scores images of a test set with one loaded model."""

    model: Any
    inference: Any
    device: Any
    dtype: Any
    transform: Any  # the model's evaluation transform (ImageTransform.for_model)
    batch_size: int
    workers: int
    seed: int
    progress: bool

    def score(self, test_set: TestSet, log: AppendLog) -> None:
        """Score the rows of ``test_set`` that ``log`` does not yet hold, appending each batch's scores."""
        import torch
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        from mfclip.data.dataset import CorruptPolicy, ManifestDataset
        from mfclip.engine.robustness import PerturbedTransform

        done = read_scores(log)["row"].to_numpy(dtype=np.int64)
        todo = test_set.rows[~test_set.rows.index.isin(done)] if done.size else test_set.rows
        if todo.empty:
            return
        transform = self.transform
        if test_set.perturbation is not None:
            transform = PerturbedTransform(transform, test_set.perturbation, seed=self.seed)
        dataset = ManifestDataset(
            todo,
            test_set.root,
            self.model.image_size,
            transform=transform,
            train=False,
            corrupt_policy=CorruptPolicy(action="drop"),
        )
        workers = self.workers if len(todo) > self.batch_size else 0
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        bar = tqdm(total=len(todo), desc=f"scoring {test_set.name}", unit="img", disable=not self.progress)
        try:
            with log, torch.inference_mode():
                for batch in loader:
                    records = []
                    if batch["image"] is not None:
                        images = batch["image"].to(self.device, self.dtype, non_blocking=True)
                        scores = self.inference(images).float().cpu().tolist()
                        rows = batch["index"].tolist()
                        records += [
                            {"row": row, "p_fake": score, "error": ""}
                            for row, score in zip(rows, scores, strict=True)
                        ]
                    records += [
                        {"row": row, "p_fake": None, "error": reason} for row, _, reason in batch["skipped"]
                    ]
                    log.append(records)
                    bar.update(len(records))
        finally:
            bar.close()


def _collate(samples: list[Any]) -> dict[str, Any]:
    """``collate_batch``, but a batch whose every file was unreadable still reports them."""
    from mfclip.data.dataset import DroppedSample, collate_batch

    batch = collate_batch(samples)
    if batch is None:
        skipped = [(s.index, s.path, s.reason) for s in samples if isinstance(s, DroppedSample)]
        return {"image": None, "skipped": skipped}
    return batch


def _score_cell(column: str, value: Any) -> Any:
    if column == "p_fake":
        return "" if value is None or value != value else repr(float(value))  # NaN != NaN
    return value


#: The score log of a test set being scored: manifest row number, P(fake), or why the image is unreadable.
SCORE_RECORDS = CsvRows(("row", "p_fake", "error"), format_value=_score_cell)


def read_scores(log: AppendLog) -> pd.DataFrame:
    """The logged scores, one per row (a row scored twice keeps its last score)."""
    frame = log.read_frame(
        dtype={"row": "int64", "error": str}, keep_default_na=False, na_values={"p_fake": [""]}
    )
    frame = frame.astype({"row": "int64", "p_fake": "float64", "error": str})
    return frame.drop_duplicates("row", keep="last")


def _scores_log(partial: Path, scoring: dict[str, Any]) -> AppendLog:
    """The score log of a partly scored test set: kept when its stamp matches ``scoring`` (checkpoint,
    rows, degradation), else started over."""
    stamp = SettingsStamp(partial / SCORES_STAMP, "mfclip-evaluation-scores")
    log = AppendLog(partial / SCORES_LOG, SCORE_RECORDS)
    if partial.is_dir():
        _adopt_chunks(partial, scoring, stamp, log)
        try:
            changes = stamp.changes(scoring)
        except JobError:
            changes = None
        if changes != []:  # no stamp, an unreadable one, or scored with other settings
            shutil.rmtree(partial)
    if not stamp.path.exists():
        stamp.write(scoring)
    return log


def _adopt_chunks(partial: Path, scoring: dict[str, Any], stamp: SettingsStamp, log: AppendLog) -> None:
    """Move the partial scores of an older release (``chunk-*.parquet`` beside a bare ``state.json``
    stamp) into the score log, when they were made with the same settings."""
    chunks = sorted(partial.glob("chunk-*.parquet"))
    old_stamp = SettingsStamp(partial / "state.json", "mfclip-evaluation-scores", accept_bare=True)
    if chunks:
        try:
            same = old_stamp.changes(scoring) == []
        except JobError:
            same = False
        if same:
            frames = pd.concat([pd.read_parquet(chunk) for chunk in chunks], ignore_index=True)
            stamp.write(scoring)
            with log:
                log.append(frames.to_dict("records"))
    for stale in [*chunks, *partial.glob(".chunk-*.tmp")]:
        stale.unlink()
    old_stamp.remove()


def _predictions(test_set: TestSet, scored: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions in manifest order (path, label, p_fake, manifest columns, row), and unreadable rows."""
    rows = test_set.rows
    scores = scored.set_index("row")
    missing = rows.index.difference(scores.index)
    if len(missing):
        raise EvaluationError(
            f"test set {test_set.name!r}: {len(missing)} row(s) were not scored (e.g. row "
            f"{spreadsheet_row(missing[0])} of {test_set.manifest.name}); evaluate again to score them"
        )
    failed = scores["error"] != ""
    if failed.all():
        raise EvaluationError(
            f"test set {test_set.name!r}: none of its {len(scores)} images could be read "
            f"(e.g. {scores['error'].iloc[0]}); is the root {test_set.root} right?"
        )
    bad = scores[failed]
    kept = rows[~rows.index.isin(bad.index)]
    predictions = pd.DataFrame(
        {
            "path": kept["path"].astype(str).to_numpy(),
            "label": kept["label"].astype("int64").to_numpy(),
            "p_fake": scores.loc[kept.index, "p_fake"].astype("float32").to_numpy(),
        }
    )
    extra = [
        c for c in kept.columns if c not in ("path", "label", "p_fake", "row") and c not in PREDICTION_COLUMNS
    ]
    for column in [*(c for c in PREDICTION_COLUMNS if c in kept.columns), *extra]:
        predictions[column] = kept[column].astype(str).to_numpy()
    predictions["row"] = np.asarray(kept.index, dtype=np.int64)
    unreadable = pd.DataFrame(
        {
            "row": np.asarray(bad.index, dtype=np.int64),
            "path": rows.loc[bad.index, "path"].astype(str).to_numpy(),
            "reason": bad["error"].to_numpy(),
        }
    )
    return predictions, unreadable


# ---------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------


def evaluate(
    checkpoint_dir: str | Path,
    protocol: Protocol | str | Path | None = None,
    manifest: str | Path | None = None,
    *,
    variant: str | None = None,
    data_dir: str | Path | None = None,
    root: str | Path | None = None,
    split: str | Sequence[str] = "test",
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str | None = "auto",
    dtype: str | None = None,
    workers: int | None = None,
    bootstrap: int = 0,
    perturb: Iterable[str] | None = None,
    seed: int = 0,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    plots: bool = True,
    progress: bool = True,
) -> EvalResult:
    """Score a checkpoint on every test set of ``protocol`` (or the ``split`` rows of ``manifest``).

    ``checkpoint_dir`` is a checkpoint directory, a Lightning ``.ckpt`` file, or a training run directory
    (its ``best/`` model is scored).
    Writes ``<out_dir>/<test_set>/{predictions.parquet, metrics.json, report.md, roc.png, histogram.png}``
    and the run-level ``metrics.json``, ``report.md``, ``roc.png`` (plus ``robustness.md`` with
    degradations); ``out_dir`` defaults to ``RUN/eval`` for ``RUN/best`` (see :func:`default_eval_dir`).
    Without ``protocol`` and ``manifest``, a run's checkpoint is evaluated on the data its training used
    (``RUN/config.yaml``). ``variant`` defaults to the one the checkpoint was trained with when its
    metadata names the same protocol. ``bootstrap`` > 0 adds 95 % intervals. Resumable: complete test
    sets are skipped and a partly scored one continues after its last scored batch.
    """
    from mfclip.models.checkpoint import checkpoint_fingerprint, load_checkpoint
    from mfclip.utils.device import resolve_device, resolve_dtype

    if batch_size < 1:
        raise EvaluationError(f"batch size must be >= 1, got {batch_size}")
    if bootstrap < 0:
        raise EvaluationError(f"bootstrap resamples must be >= 0 (0: no intervals), got {bootstrap}")
    group_by = [group_by] if isinstance(group_by, str) else list(group_by)
    checkpoint_dir = resolve_checkpoint(checkpoint_dir)
    model, metadata = load_checkpoint(checkpoint_dir, map_location="cpu")
    if protocol is None and manifest is None:
        trained = training_data(checkpoint_dir)
        if not trained.get("protocol") and not trained.get("manifest"):
            raise EvaluationError(
                f"{checkpoint_dir}: give a protocol or a manifest to evaluate on (the checkpoint is not in a "
                "run directory whose config.yaml names its data)"
            )
        protocol, manifest, variant = trained["protocol"], trained["manifest"], variant or trained["variant"]
        data_dir = data_dir if data_dir is not None else trained["data_dir"]
        root = root if root is not None else trained["root"]
    if protocol is not None and variant is None:
        variant = _trained_variant(protocol, metadata)
    test_sets = build_test_sets(
        protocol, manifest, variant=variant, data_dir=data_dir, root=root, split=split, perturb=perturb
    )
    _check_group_by(group_by, test_sets)
    out = Path(out_dir) if out_dir is not None else default_eval_dir(checkpoint_dir)
    _check_unique_dirs(test_sets)
    out.mkdir(parents=True, exist_ok=True)

    with JobLock.in_folder(out, "evaluation"):
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype)
        model = model.to(device=torch_device, dtype=torch_dtype).eval()
        scorer = _Scorer(
            model=model,
            inference=model.inference_module().eval(),
            device=torch_device,
            dtype=torch_dtype,
            transform=ImageTransform.for_model(model),
            batch_size=batch_size,
            workers=_auto_workers() if workers is None else max(int(workers), 0),
            seed=seed,
            progress=progress,
        )
        fingerprint = checkpoint_fingerprint(checkpoint_dir)
        metric_settings = {"group_by": list(group_by), "bootstrap": int(bootstrap), "seed": int(seed)}
        result = EvalResult(out_dir=out, metrics={}, checkpoint=checkpoint_dir)
        remove_temporaries(out)  # files a killed evaluation never finished writing
        for test_set in test_sets:
            directory = out / safe_name(test_set.name)
            remove_temporaries(directory)
            scoring = {
                "checkpoint": fingerprint,
                "rows": _rows_digest(test_set),
                "root": str(test_set.root.resolve()),  # the same rows under another root are other images
                "n_rows": len(test_set.rows),
                "perturbation": test_set.perturbation.to_dict() if test_set.perturbation else None,
                # The resize the model's input contract asks for (evaluation cuts no faces).
                "transform": scorer.transform.config.to_dict(),
                # Only the noise degradation draws random numbers.
                "seed": int(seed)
                if test_set.perturbation and test_set.perturbation.kind == "noise"
                else None,
            }
            state = _read_state(directory)
            if state is not None and setting_changes(state.get("scoring", {}), scoring) == []:
                if setting_changes(state.get("metrics", {}), metric_settings) == []:
                    shutil.rmtree(directory / PARTIAL_DIR, ignore_errors=True)  # left by a kill at the end
                    result.metrics[test_set.name] = read_metrics(directory / METRICS_FILE)
                    result.resumed.append(test_set.name)
                    continue
                # Same predictions, other metric settings: recompute the metrics only.
                from mfclip.metrics import load_predictions

                predictions = load_predictions(directory / PREDICTIONS_FILE)
                unreadable_path = directory / UNREADABLE_FILE
                unreadable = pd.read_csv(unreadable_path) if unreadable_path.is_file() else None
                result.metrics[test_set.name] = _write_test_set(
                    directory,
                    test_set,
                    predictions,
                    unreadable,
                    metric_settings,
                    scoring,
                    plots,
                    write_predictions=False,
                )
                result.scored.append(test_set.name)
                continue
            partial = directory / PARTIAL_DIR
            log = _scores_log(partial, scoring)
            scorer.score(test_set, log)
            predictions, unreadable = _predictions(test_set, read_scores(log))
            result.metrics[test_set.name] = _write_test_set(
                directory, test_set, predictions, unreadable, metric_settings, scoring, plots
            )
            shutil.rmtree(partial, ignore_errors=True)
            result.scored.append(test_set.name)

        result.files = write_run_report(out, result.metrics, plots=plots)
        perturbations = _perturbations_of(test_sets)
        if perturbations:
            path = out / "robustness.md"
            atomic_write_text(path, robustness_table(result.metrics, perturbations))
            result.files["robustness"] = path
        atomic_write_json(
            out / EVALUATION_FILE,
            {
                "checkpoint": str(checkpoint_dir),
                "checkpoint_fingerprint": fingerprint,
                "protocol": _protocol_label(protocol),
                "variant": variant,
                "manifest": str(manifest) if manifest is not None else None,
                "test_sets": {t.name: safe_name(t.name) for t in test_sets},
                "synthetic": metadata.is_synthetic or _protocol_is_synthetic(protocol),
                **metric_settings,
            },
        )
        return result


def _check_group_by(group_by: Sequence[str], test_sets: Sequence[TestSet]) -> None:
    """Refuse, before any scoring, a grouping column that no test set has (a test set that lacks a
    column another one has is fine: it is grouped by the columns it has)."""
    check_group_by(group_by, (c for test_set in test_sets for c in test_set.rows.columns), "test sets")


def _write_test_set(
    directory: Path,
    test_set: TestSet,
    predictions: pd.DataFrame,
    unreadable: pd.DataFrame | None,
    metric_settings: dict[str, Any],
    scoring: dict[str, Any],
    plots: bool,
    write_predictions: bool = True,
) -> dict[str, Any]:
    metrics = evaluate_predictions(
        predictions,
        group_by=metric_settings["group_by"],
        bootstrap=metric_settings["bootstrap"],
        seed=metric_settings["seed"],
        name=test_set.name,
    )
    if test_set.perturbation is not None:
        metrics["perturbation"] = test_set.perturbation.to_dict()
    if unreadable is not None:
        metrics["unreadable"] = len(unreadable)
        unreadable_path = directory / UNREADABLE_FILE
        if len(unreadable):
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_text(unreadable_path, unreadable.to_csv(index=False))
            logger.warning(
                "%s: %d unreadable image(s) left out (listed in %s)",
                test_set.name,
                len(unreadable),
                unreadable_path,
            )
        elif unreadable_path.exists():
            unreadable_path.unlink()
    # The stamp goes first-out, last-in: a crash between the files never leaves a stale stamp behind.
    stamp = _state_stamp(directory)
    stamp.remove()
    write_evaluation(
        directory,
        predictions,
        metrics,
        predictions_format="parquet" if write_predictions else None,
        plots=plots,
    )
    stamp.write({"scoring": scoring, "metrics": metric_settings})
    return read_metrics(directory / METRICS_FILE)


def _state_stamp(directory: Path) -> SettingsStamp:
    """What produced a complete test set's files: ``{"scoring": ..., "metrics": ...}``."""
    return SettingsStamp(directory / STATE_NAME, "mfclip-evaluation", accept_bare=True)


def _read_state(directory: Path) -> dict[str, Any] | None:
    if not (directory / METRICS_FILE).is_file() or not (directory / PREDICTIONS_FILE).is_file():
        return None
    try:
        return _state_stamp(directory).read()
    except JobError:
        return None


def _check_unique_dirs(test_sets: Sequence[TestSet]) -> None:
    seen: dict[str, str] = {}
    for test_set in test_sets:
        directory = safe_name(test_set.name)
        if directory in seen and seen[directory] != test_set.name:
            raise EvaluationError(
                f"test sets {seen[directory]!r} and {test_set.name!r} would share the directory "
                f"{directory!r}; rename one"
            )
        seen[directory] = test_set.name


def _perturbations_of(test_sets: Sequence[TestSet]) -> list[Perturbation]:
    found: dict[str, Perturbation] = {}
    for test_set in test_sets:
        if test_set.perturbation is not None:
            found.setdefault(test_set.perturbation.name, test_set.perturbation)
    return list(found.values())


def _trained_variant(protocol: Protocol | str | Path, metadata: CheckpointMetadata) -> str | None:
    """The variant recorded in the checkpoint's metadata, when it was trained on the same protocol."""
    trained = metadata.protocol
    if trained is None:
        return None
    trained_name, recorded = trained.name, trained.variant
    if not recorded:
        return None
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    names = {proto.name, str(protocol), Path(str(protocol)).stem}
    if (
        trained_name is not None
        and str(trained_name) not in names
        and Path(str(trained_name)).stem not in names
    ):
        return None
    return str(recorded) if recorded in proto.variants else None


def training_data(checkpoint: str | Path) -> dict[str, Any]:
    """Where a run's checkpoint was trained: ``protocol, variant, data_dir, manifest, root`` from the run's
    ``config.yaml`` (empty when the checkpoint is not inside a run directory)."""
    from mfclip.engine.config import load_train_config

    eval_dir = default_eval_dir(checkpoint)
    config_path = eval_dir.parent / runinfo.CONFIG_FILE
    if eval_dir.name != runinfo.EVAL_DIR or not config_path.is_file():
        return {}
    data = load_train_config(config_path).data
    return {
        "protocol": data.protocol,
        "variant": data.variant,
        "data_dir": data.data_dir,
        "manifest": data.manifest,
        "root": data.root,
    }


def _protocol_label(protocol: Protocol | str | Path | None) -> str | None:
    if protocol is None:
        return None
    return protocol.name if isinstance(protocol, Protocol) else str(protocol)


def _protocol_is_synthetic(protocol: Protocol | str | Path | None) -> bool:
    if protocol is None:
        return False
    try:
        proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    except ConfigError:
        return False
    return bool(proto.synthetic)


def _auto_workers() -> int:
    cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1))
