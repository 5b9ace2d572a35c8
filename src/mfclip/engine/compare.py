"""Train and evaluate several configs on one protocol, then put them side by side in one table.

Each entry is a training config (a YAML file, a training preset, an experiment preset from
``configs/experiments/``, or a model preset trained with a base preset). For every entry — and every
protocol variant when none is chosen — a run directory ``OUT/runs/<label>[-<variant>]`` is trained with
:func:`mfclip.engine.train.train` and evaluated with :func:`mfclip.engine.evaluate.evaluate`, then the
comparison is recomputed from the saved predictions (``mfclip.metrics.compare_runs``) into
``OUT/comparison.md`` and ``OUT/comparison.csv``. Rerunning the same command reuses finished runs,
resumes interrupted ones, and skips evaluations already written.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mfclip.engine import runinfo
from mfclip.engine.config import bundled_experiment, list_experiments
from mfclip.utils.config import ConfigError, closest
from mfclip.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

COMPARED_METRICS = ("auc", "ap", "eer")
# Settings that may differ when a finished run is reused: where output goes and how it is shown or loaded.
_IGNORED_SECTIONS = ("output", "logging")
_IGNORED_KEYS = {
    "trainer": ("progress_bar", "log_every_n_steps"),
    "data": ("num_workers", "eval_batch_size"),
}


def experiment_path(name: str) -> Path:
    """The YAML file of a bundled experiment preset."""
    path = bundled_experiment(name)
    if path is None:
        names = list_experiments()
        hint = closest(name, names)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"unknown experiment {name!r}{suggestion} Experiments: {', '.join(names)}")
    return path


@dataclass(frozen=True)
class CompareEntry:
    """One column of the comparison: a label, a training config (name or path) and its overrides."""

    label: str
    config: str
    overrides: tuple[str, ...] = ()


def resolve_entry(spec: str | Path | CompareEntry, base: str = "default") -> CompareEntry:
    """An entry from a YAML path, a training preset, an experiment name or a model preset.

    A model preset (``mfclip models``) trains with the ``base`` training preset and ``model.name`` set.
    """
    if isinstance(spec, CompareEntry):
        return spec
    from mfclip.engine.config import TRAIN_CONFIG_DIR, list_train_presets
    from mfclip.models.registry import list_models

    text = str(spec)
    path = Path(text)
    if path.is_file():
        return CompareEntry(path.stem, str(path))
    name = text.removeprefix("experiments/")
    if text in list_train_presets():
        return CompareEntry(text, str(TRAIN_CONFIG_DIR / f"{text}.yaml"))
    if name in list_experiments():
        return CompareEntry(name, str(experiment_path(name)))
    if text in list_models():
        return CompareEntry(text, base, (f"model.name={text}",))
    known = [*list_train_presets(), *list_experiments(), *list_models()]
    hint = closest(text, known)
    suggestion = f"; did you mean {hint!r}?" if hint else ""
    raise ConfigError(
        f"{text!r} is not a config file, training preset, experiment or model preset{suggestion} "
        f"(training presets: {', '.join(list_train_presets())}; experiments: `mfclip compare --list`)"
    )


@dataclass
class CompareRun:
    """One trained and evaluated (entry, variant)."""

    label: str
    entry: CompareEntry
    variant: str | None
    run_dir: Path
    status: str  # "trained", "resumed" (training continued) or "reused" (finished before)
    best_val_auc: float | None = None


@dataclass
class CompareResult:
    """Where the comparison went: one run per column, the tables and the files."""

    out_dir: Path
    runs: list[CompareRun]
    table: pd.DataFrame  # AUC: rows (test set, level, group), one column per run
    markdown_path: Path
    csv_path: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # by metric


def _unique_labels(entries: Sequence[CompareEntry]) -> list[CompareEntry]:
    seen: dict[str, int] = {}
    result = []
    for entry in entries:
        label = entry.label
        if label in seen:
            seen[label] += 1
            label = f"{label}-{seen[entry.label]}"
        seen.setdefault(label, 1)
        result.append(CompareEntry(label, entry.config, entry.overrides))
    return result


def _training_fingerprint(config: Any) -> dict[str, Any]:
    data = config.to_dict()
    for section in _IGNORED_SECTIONS:
        data.pop(section, None)
    for section, keys in _IGNORED_KEYS.items():
        for key in keys:
            data.get(section, {}).pop(key, None)
    return data


def _finished(run_dir: Path) -> bool:
    from mfclip.models.checkpoint import is_checkpoint_dir

    summary = runinfo.read_summary(run_dir)
    completed = summary is not None and summary.get("status") == "completed"
    return completed and is_checkpoint_dir(run_dir / runinfo.BEST_DIR)


def _check_same_config(run_dir: Path, config: Any) -> None:
    """Refuse to reuse a run trained with other settings (its results would be mislabelled)."""
    from mfclip.engine.config import load_train_config

    recorded_path = run_dir / runinfo.CONFIG_FILE
    if not recorded_path.is_file():
        return
    recorded = _training_fingerprint(load_train_config(recorded_path))
    wanted = _training_fingerprint(config)
    if recorded != wanted:
        differing = sorted(_differences(recorded, wanted))
        raise ConfigError(
            f"{run_dir} was trained with other settings ({', '.join(differing[:5])}); choose another --out "
            "or remove that run directory to retrain it"
        )


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]


def _train_one(
    entry: CompareEntry,
    variant: str | None,
    run_dir: Path,
    data: dict[str, Any],
    overrides: Sequence[str],
) -> CompareRun:
    from mfclip.engine.train import compose_config, train

    config = compose_config(
        entry.config,
        [*entry.overrides, *overrides],
        protocol=data["protocol"],
        variant=variant,
        data_dir=data["data_dir"],
        manifest=data["manifest"],
        root=data["root"],
        out=str(run_dir),
    )
    _check_same_config(run_dir, config)
    label = run_dir.name
    if _finished(run_dir):
        summary = runinfo.read_summary(run_dir) or {}
        return CompareRun(label, entry, variant, run_dir, "reused", summary.get("best_val_auc"))
    resume = run_dir if (run_dir / runinfo.CHECKPOINT_DIR / runinfo.LAST_CHECKPOINT).is_file() else None
    result = train(config, resume=resume)
    status = "resumed" if resume is not None else "trained"
    if result.best_checkpoint_dir is None:
        raise ConfigError(f"{run_dir}: training produced no best model (did validation run?)")
    return CompareRun(label, entry, variant, run_dir, status, result.best_val_auc)


def compare(
    configs: Sequence[str | Path | CompareEntry],
    protocol: str | Path | None = None,
    *,
    variant: str | None = None,
    data_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    root: str | Path | None = None,
    out_dir: str | Path = "compare",
    overrides: Iterable[str] = (),
    base: str = "default",
    bootstrap: int = 0,
    perturb: Iterable[str] | None = None,
    group_by: Sequence[str] | None = None,
    batch_size: int = 64,
    device: str | None = "auto",
    workers: int | None = None,
    plots: bool = True,
    progress: bool = True,
) -> CompareResult:
    """Train (or reuse) and evaluate every config on ``protocol``, then write the comparison.

    ``configs``: YAML paths, training presets, experiment names, model presets (trained with ``base``) or
    :class:`CompareEntry`. Without ``variant``, every variant of the protocol is run (one column each,
    ``<label>-<variant>``). ``overrides`` (``key=value``) apply to every config. Returns the AUC table and
    the per-metric tables; files: ``OUT/comparison.md`` (AUC tables per test set and group, then AP and
    EER per test set), ``OUT/comparison.csv`` (``metric, test_set, level, group_by, group, <run>...``),
    ``OUT/compare.json`` and ``OUT/runs/<run>/`` (each a full run directory with ``eval/``).
    """
    from mfclip.engine.evaluate import evaluate
    from mfclip.engine.protocol import load_protocol
    from mfclip.metrics import DEFAULT_GROUP_BY
    from mfclip.metrics.compare import compare_runs, render_comparison

    if not configs:
        raise ConfigError("give at least one config to compare")
    if protocol is None and manifest is None:
        raise ConfigError("give a protocol (or a manifest with train/val/test splits) to compare on")
    entries = _unique_labels([resolve_entry(c, base) for c in configs])
    overrides = list(overrides)
    group_by = tuple(group_by) if group_by is not None else DEFAULT_GROUP_BY
    variants: list[str | None] = [variant]
    if protocol is not None and variant is None:
        variants = load_protocol(protocol).variant_names()
    data = {
        "protocol": str(protocol) if protocol is not None else None,
        "data_dir": str(data_dir) if data_dir is not None else None,
        "manifest": str(manifest) if manifest is not None else None,
        "root": str(root) if root is not None else None,
    }
    out = Path(out_dir)
    runs: list[CompareRun] = []
    test_sets: dict[str, None] = {}  # ordered: the test sets of this comparison
    for entry in entries:
        for name in variants:
            run_dir = (
                out
                / "runs"
                / (entry.label if name is None or len(variants) == 1 else f"{entry.label}-{name}")
            )
            logger.info("compare: %s", run_dir.name)
            run = _train_one(entry, name, run_dir, data, overrides)
            evaluation = evaluate(
                run_dir / runinfo.BEST_DIR,
                protocol=protocol,
                manifest=manifest,
                variant=name,
                data_dir=data_dir,
                root=root,
                out_dir=run_dir / runinfo.EVAL_DIR,
                batch_size=batch_size,
                device=device,
                workers=workers,
                bootstrap=bootstrap,
                perturb=perturb,
                group_by=group_by,
                plots=plots,
                progress=progress,
            )
            test_sets.update(dict.fromkeys(evaluation.metrics))
            runs.append(run)
            _write_index(out, runs, protocol, variant, overrides)

    run_dirs = [r.run_dir for r in runs]
    labels = [r.label for r in runs]
    # A run directory may hold evaluations of other test sets too (RUN/eval is shared); keep ours.
    tables = {}
    for metric in COMPARED_METRICS:
        table = compare_runs(run_dirs, metric=metric, group_by=group_by, bootstrap=bootstrap)
        tables[metric] = table[table["test_set"].isin(list(test_sets))].reset_index(drop=True)
    parts = [render_comparison(tables["auc"], labels, metric="auc")]
    for metric in COMPARED_METRICS[1:]:
        overall = tables[metric][tables[metric]["group_by"] == ""]
        parts.append(render_comparison(overall, labels, metric=metric))
    header = _header(protocol, variant, runs, overrides)
    markdown = "\n".join([header, *(_demote(p) for p in parts)])
    markdown_path = out / "comparison.md"
    csv_path = out / "comparison.csv"
    atomic_write_text(markdown_path, markdown)
    combined = pd.concat([t.assign(metric=m) for m, t in tables.items()], ignore_index=True)
    combined = combined[["metric", *[c for c in combined.columns if c != "metric"]]]
    buffer = io.StringIO()
    combined.to_csv(buffer, index=False)
    atomic_write_text(csv_path, buffer.getvalue())
    return CompareResult(out, runs, tables["auc"], markdown_path, csv_path, tables)


def _demote(markdown: str) -> str:
    """Headings one level down, so the sections sit under the comparison's title."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def _header(protocol: Any, variant: str | None, runs: Sequence[CompareRun], overrides: Sequence[str]) -> str:
    lines = ["# Comparison", ""]
    if protocol is not None:
        lines.append(f"Protocol `{protocol}`" + (f", variant `{variant}`" if variant else "") + ".")
    lines += ["", "| run | config | variant | overrides | best val AUC |", "|---|---|---|---|---|"]
    for run in runs:
        auc = f"{run.best_val_auc:.4f}" if run.best_val_auc is not None else "n/a"
        extra = " ".join([*run.entry.overrides, *overrides]) or "—"
        lines.append(f"| {run.label} | `{run.entry.config}` | {run.variant or '—'} | {extra} | {auc} |")
    lines += [
        "",
        "AUC is the primary metric; AP and EER follow. Every number is recomputed from the runs' saved "
        "predictions (`runs/<run>/eval/<test_set>/predictions.parquet`).",
        "",
    ]
    return "\n".join(lines)


def _write_index(
    out: Path, runs: Sequence[CompareRun], protocol: Any, variant: str | None, overrides: Sequence[str]
) -> None:
    atomic_write_json(
        out / "compare.json",
        {
            "protocol": str(protocol) if protocol is not None else None,
            "variant": variant,
            "overrides": list(overrides),
            "runs": [
                {
                    "label": r.label,
                    "config": r.entry.config,
                    "config_overrides": list(r.entry.overrides),
                    "variant": r.variant,
                    "run_dir": str(r.run_dir),
                    "status": r.status,
                    "best_val_auc": r.best_val_auc,
                }
                for r in runs
            ],
        },
    )
