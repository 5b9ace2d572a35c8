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
from pydantic import Field

from mfclip.engine import runinfo
from mfclip.engine.config import EXPERIMENTS_DIR, bundled_experiment, list_experiments
from mfclip.utils.config import ConfigError, StrictConfig, closest, load_yaml
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


STUDIES_DIR = EXPERIMENTS_DIR / "studies"


class StudyColumn(StrictConfig):
    """One column of a study: a training config (as ``mfclip compare`` takes it) and its overrides."""

    config: str | None = None  # default: the column's label (e.g. a model preset such as cnn-tiny)
    overrides: list[str] = Field(default_factory=list)


class Study(StrictConfig):
    """A named comparison: its columns, the settings shared by all of them, seeds and reference.

    ``mfclip compare --study NAME`` runs it; configs given next to it become extra columns trained with
    the same settings, so a study grows by rerunning one command (finished runs are reused).
    """

    name: str
    description: str = ""
    protocol: str | None = None
    base: str = "default"  # training preset of the columns given as model presets
    overrides: list[str] = Field(default_factory=list)  # applied to every column (the shared budget)
    seeds: list[int] | None = None
    reference: str | None = None
    columns: dict[str, StudyColumn]

    def entries(self) -> list[CompareEntry]:
        """The columns as compare entries, in file order."""
        result = []
        for label, column in self.columns.items():
            entry = resolve_entry(column.config or label, self.base)
            result.append(CompareEntry(label, entry.config, (*entry.overrides, *column.overrides)))
        return result


def list_studies() -> list[str]:
    """Names of the bundled studies (``configs/experiments/studies/*.yaml``)."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def load_study(name_or_path: str | Path) -> Study:
    """A bundled study by name, or a study YAML file; the reference must be one of its columns."""
    path = Path(name_or_path)
    if not path.is_file():
        path = STUDIES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            names = list_studies()
            hint = closest(str(name_or_path), names)
            suggestion = f"; did you mean {hint!r}?" if hint else ""
            raise ConfigError(
                f"unknown study {str(name_or_path)!r}{suggestion} Studies: {', '.join(names) or 'none'}"
            )
    study = Study.from_dict(load_yaml(path), source=str(path))
    if not study.columns:
        raise ConfigError(f"{path}: a study needs at least one column")
    if study.reference is not None and study.reference not in study.columns:
        raise ConfigError(f"{path}: reference {study.reference!r} is not one of its columns")
    return study


@dataclass
class CompareRun:
    """One trained and evaluated (entry, variant, seed)."""

    label: str
    entry: CompareEntry
    variant: str | None
    run_dir: Path
    status: str  # "trained", "resumed" (training continued) or "reused" (finished before)
    best_val_auc: float | None = None
    seed: int | None = None  # the training seed set by ``seeds`` (None: the config's own)
    column: str = ""  # the config column this run belongs to (``label`` without the seed)


@dataclass
class CompareResult:
    """Where the comparison went: one run per column, the tables and the files."""

    out_dir: Path
    runs: list[CompareRun]
    table: pd.DataFrame  # AUC: rows (test set, level, group), one column per run
    markdown_path: Path
    csv_path: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # by metric
    # With seeds: per metric, one row per (test set, level, group, column) with mean, sd and the paired
    # difference from the reference (mfclip.metrics.seeds.seed_statistics); the CSV beside it.
    seed_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    seeds_csv_path: Path | None = None
    reference: str | None = None


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
    configs: Sequence[str | Path | CompareEntry] = (),
    protocol: str | Path | None = None,
    *,
    study: str | Path | Study | None = None,
    variant: str | None = None,
    data_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    root: str | Path | None = None,
    out_dir: str | Path = "compare",
    overrides: Iterable[str] = (),
    base: str | None = None,
    seeds: Sequence[int] | None = None,
    reference: str | None = None,
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
    ``<label>-<variant>``). ``overrides`` (``key=value``) apply to every config; ``base`` (default
    ``default``) is the training preset of model presets. Returns the AUC table and
    the per-metric tables; files: ``OUT/comparison.md`` (AUC tables per test set and group, then AP and
    EER per test set), ``OUT/comparison.csv`` (``metric, test_set, level, group_by, group, <run>...``),
    ``OUT/compare.json`` and ``OUT/runs/<run>/`` (each a full run directory with ``eval/``).

    ``seeds``: train every column once per training seed (``trainer.seed``; runs ``<column>-seed<k>``);
    ``comparison.md`` then opens with mean ± sd across seeds and each column's paired difference from
    ``reference`` (a column label, default the first), and ``OUT/seeds.csv`` holds those statistics for
    every row. With ``bootstrap`` > 0 the differences also get a paired bootstrap interval over test
    images (see :mod:`mfclip.metrics.seeds`).

    ``study`` (a :class:`Study`, a bundled study name or a study YAML): its columns come first, then
    ``configs`` as extra columns; its protocol, base, seeds and reference apply unless given here, and
    its overrides come before ``overrides``.
    """
    from mfclip.engine.evaluate import evaluate
    from mfclip.engine.protocol import load_protocol
    from mfclip.metrics import DEFAULT_GROUP_BY
    from mfclip.metrics.compare import compare_runs, render_comparison

    overrides = list(overrides)
    study_entries: list[CompareEntry] = []
    if study is not None:
        study = study if isinstance(study, Study) else load_study(study)
        study_entries = study.entries()
        protocol = protocol if protocol is not None or manifest is not None else study.protocol
        base = base if base is not None else study.base
        seeds = seeds if seeds is not None else study.seeds
        reference = reference if reference is not None else study.reference
        overrides = [*study.overrides, *overrides]
    base = base if base is not None else "default"
    if not configs and not study_entries:
        raise ConfigError("give at least one config to compare")
    if protocol is None and manifest is None:
        raise ConfigError("give a protocol (or a manifest with train/val/test splits) to compare on")
    entries = _unique_labels([*study_entries, *(resolve_entry(c, base) for c in configs)])
    seed_list = _check_seeds(seeds, overrides)
    labels_in_order = [e.label for e in entries]
    if reference is not None and reference not in labels_in_order:
        hint = closest(reference, labels_in_order)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"reference {reference!r} is not one of the compared configs{suggestion}")
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
            column = entry.label if name is None or len(variants) == 1 else f"{entry.label}-{name}"
            for seed in seed_list or [None]:
                run_name = column if seed is None else f"{column}-seed{seed}"
                run_dir = out / "runs" / run_name
                logger.info("compare: %s", run_name)
                seed_overrides = [] if seed is None else [f"trainer.seed={seed}"]
                run = _train_one(entry, name, run_dir, data, [*overrides, *seed_overrides])
                run.seed, run.column = seed, column
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
                _write_index(out, runs, protocol, variant, overrides, seed_list, reference, study)

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
    header = _header(protocol, variant, runs, overrides, study.name if study is not None else None)
    markdown_path = out / "comparison.md"
    csv_path = out / "comparison.csv"
    seed_tables: dict[str, pd.DataFrame] = {}
    seeds_csv_path: Path | None = None
    if seed_list:
        reference = reference or labels_in_order[0]
        seed_tables, summary = _seed_summary(runs, tables, reference, variants, list(test_sets), bootstrap)
        seeds_csv_path = out / "seeds.csv"
        combined_stats = pd.concat([t.assign(metric=m) for m, t in seed_tables.items()], ignore_index=True)
        combined_stats = combined_stats[["metric", *[c for c in combined_stats.columns if c != "metric"]]]
        buffer = io.StringIO()
        combined_stats.to_csv(buffer, index=False)
        atomic_write_text(seeds_csv_path, buffer.getvalue())
        parts.insert(0, summary)
        parts.insert(1, "# Every run\n\nOne column per (config, seed).\n")
    markdown = "\n".join([header, *(_demote(p) for p in parts)])
    atomic_write_text(markdown_path, markdown)
    combined = pd.concat([t.assign(metric=m) for m, t in tables.items()], ignore_index=True)
    combined = combined[["metric", *[c for c in combined.columns if c != "metric"]]]
    buffer = io.StringIO()
    combined.to_csv(buffer, index=False)
    atomic_write_text(csv_path, buffer.getvalue())
    return CompareResult(
        out,
        runs,
        tables["auc"],
        markdown_path,
        csv_path,
        tables,
        seed_tables=seed_tables,
        seeds_csv_path=seeds_csv_path,
        reference=reference if seed_list else None,
    )


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0,1,2"``, ``"0-4"`` or a mix (``"0-2,7"``); a clear error otherwise."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError
                seeds += range(low, high + 1)
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(
                f"--seeds: {part!r} is not a seed or a range; write e.g. 0,1,2 or 0-4"
            ) from None
    return seeds


def _check_seeds(seeds: Sequence[int] | None, overrides: Sequence[str]) -> list[int]:
    if seeds is None:
        return []
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("seeds: give at least one seed (or none at all for the configs' own seed)")
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds: {seed_list} repeats a seed")
    if any(s < 0 for s in seed_list):
        raise ConfigError(f"seeds: {seed_list} holds a negative seed")
    if any(o.split("=", 1)[0].strip() == "trainer.seed" for o in overrides):
        raise ConfigError("give the training seed either as seeds (--seeds) or as trainer.seed=, not both")
    return seed_list


def _seed_summary(
    runs: Sequence[CompareRun],
    tables: dict[str, pd.DataFrame],
    reference: str,
    variants: Sequence[str | None],
    test_sets: Sequence[str],
    bootstrap: int,
) -> tuple[dict[str, pd.DataFrame], str]:
    """Across-seed statistics of every metric and their markdown (with a paired image bootstrap)."""
    from mfclip.metrics import find_predictions, load_predictions
    from mfclip.metrics.seeds import paired_bootstrap, render_seed_summary, seed_statistics, with_mean_row

    columns: dict[str, dict[int, str]] = {}
    references: dict[str, str] = {}
    for run in runs:
        if run.seed is None:
            continue
        columns.setdefault(run.column, {})[run.seed] = run.label
        suffix = "" if run.variant is None or len(variants) == 1 else f"-{run.variant}"
        references[run.column] = f"{reference}{suffix}"
    statistics = {
        metric: seed_statistics(with_mean_row(table, [r.label for r in runs]), columns, references)
        for metric, table in tables.items()
    }
    intervals: dict[str, dict[str, dict]] = {}
    if bootstrap:
        for test_set in test_sets:
            frames: dict[str, dict[int, pd.DataFrame]] = {}
            for run in runs:
                path = find_predictions(run.run_dir).get(test_set)
                if path is not None:
                    frames.setdefault(run.column, {})[run.seed] = load_predictions(path, columns=("path",))
            found = paired_bootstrap(frames, references, metrics=list(tables), n_resamples=bootstrap)
            for metric, by_column in found.items():
                intervals.setdefault(metric, {})[test_set] = by_column
    seeds = sorted({run.seed for run in runs if run.seed is not None})
    return statistics, render_seed_summary(statistics, list(columns), seeds, intervals or None)


def _demote(markdown: str) -> str:
    """Headings one level down, so the sections sit under the comparison's title."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def _header(
    protocol: Any,
    variant: str | None,
    runs: Sequence[CompareRun],
    overrides: Sequence[str],
    study: str | None = None,
) -> str:
    lines = ["# Comparison", ""]
    if study is not None:
        lines.append(f"Study `{study}`.")
    if protocol is not None:
        lines.append(f"Protocol `{protocol}`" + (f", variant `{variant}`" if variant else "") + ".")
    if overrides:
        lines.append("Overrides of every run: " + " ".join(f"`{o}`" for o in overrides) + ".")
    lines += ["", "| run | config | variant | overrides | best val AUC |", "|---|---|---|---|---|"]
    for run in runs:
        auc = f"{run.best_val_auc:.4f}" if run.best_val_auc is not None else "n/a"
        extra = [*run.entry.overrides, *([f"trainer.seed={run.seed}"] if run.seed is not None else [])]
        shown = " ".join(f"`{o}`" for o in extra) or "—"
        lines.append(
            f"| {run.label} | `{_config_name(run.entry.config)}` | {run.variant or '—'} | {shown} | {auc} |"
        )
    lines += [
        "",
        "AUC is the primary metric; AP and EER follow. Every number is recomputed from the runs' saved "
        "predictions (`runs/<run>/eval/<test_set>/predictions.parquet`).",
        "",
    ]
    return "\n".join(lines)


def _config_name(config: str) -> str:
    """A bundled preset's name rather than its installed path; other configs as given."""
    path = Path(config)
    bundled = EXPERIMENTS_DIR.parent
    if path.is_absolute() and path.is_relative_to(bundled):
        return str(path.relative_to(bundled).with_suffix(""))
    return config


def _write_index(
    out: Path,
    runs: Sequence[CompareRun],
    protocol: Any,
    variant: str | None,
    overrides: Sequence[str],
    seeds: Sequence[int],
    reference: str | None,
    study: Study | None = None,
) -> None:
    atomic_write_json(
        out / "compare.json",
        {
            "study": study.name if study is not None else None,
            "protocol": str(protocol) if protocol is not None else None,
            "variant": variant,
            "overrides": list(overrides),
            "seeds": list(seeds) or None,
            "reference": reference,
            "runs": [
                {
                    "label": r.label,
                    "column": r.column or r.label,
                    "seed": r.seed,
                    "config": r.entry.config,
                    "config_overrides": list(r.entry.overrides),
                    "variant": r.variant,
                    "run_dir": str(r.run_dir),
                    "status": r.status,
                    "best_val_auc": r.best_val_auc,
                    "train_seconds": _train_seconds(r.run_dir),
                }
                for r in runs
            ],
        },
    )


def _train_seconds(run_dir: Path) -> float | None:
    """Training time recorded in the run's summary (of its last session when it was resumed)."""
    summary = runinfo.read_summary(run_dir)
    return summary.get("elapsed_s") if summary is not None else None
