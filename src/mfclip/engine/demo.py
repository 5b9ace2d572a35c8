"""The offline demo: MFCLIP and a baseline on a SYNTHETIC benchmark, end to end on a CPU.

1. generate the SYNTHETIC benchmark (:func:`mfclip.data.synth.generate_benchmark`);
2. train the tiny MFCLIP and one baseline on the seen generators, selecting on their validation split,
   and evaluate both on the seen and the held-out unseen generators (:func:`mfclip.engine.compare.compare`);
3. score a few test images with each trained model through :class:`mfclip.Detector`;
4. write ``REPORT.md`` with the side-by-side tables and plots.

Every step resumes: rerunning the same command skips what is already done. Nothing is downloaded.
All numbers come from synthetic images and say nothing about real forgeries; every output says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfclip.engine import runinfo
from mfclip.engine.compare import CompareEntry, CompareResult, compare
from mfclip.utils.config import ConfigError
from mfclip.utils.io import atomic_write_json, atomic_write_text

SYNTHETIC_BANNER = (
    '**SYNTHETIC DATA.** Every image in this demo is procedurally rendered: the "real" faces are cartoon '
    'faces seen through a simulated camera and the "fakes" come from simulated generators. The numbers '
    "show that the pipeline works and how the models compare on this benchmark; they say nothing about "
    "detecting real forgeries."
)
MODEL = "mfclip-tiny"
DEFAULT_BASELINE = "cnn-tiny"
TRAIN_PRESET = "demo"
# Training of the full demo, on top of the `demo` training preset (tuned for ~2 CPU cores).
FULL = {
    "size": 3000,
    "overrides": (
        "trainer.max_epochs=10",
        "trainer.early_stopping=null",
        "optim.lr=1e-3",
        "optim.lr_pretrained=1e-3",
        "optim.step_size_epochs=6",
    ),
}
# --fast: a smoke run of a few seconds per model (for tests and CI); its numbers are meaningless.
FAST = {
    "size": 120,
    "overrides": (
        "trainer.max_epochs=1",
        "trainer.early_stopping=null",
        "trainer.log_every_n_steps=1",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.progress_bar=false",
    ),
}
COMMON_OVERRIDES = ("logging.tensorboard=false",)
EXAMPLES_PER_KIND = 2  # images shown per kind (real, seen fake, unseen fake) in the report
SLOW_SECONDS = 600.0  # a demo slower than this gets a note on what may have slowed it


@dataclass
class DemoResult:
    """Where the demo wrote everything, its tables and how long each step took."""

    out_dir: Path
    report_path: Path
    comparison: CompareResult
    summary: pd.DataFrame  # rows: test sets; columns: (model, metric)
    examples: pd.DataFrame  # a few test images with each model's P(fake)
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def run_demo(
    out_dir: str | Path = "demo",
    *,
    size: int | None = None,
    image_size: int = 64,
    seed: int = 0,
    fast: bool = False,
    baseline: str = DEFAULT_BASELINE,
    workers: int | None = None,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run (or finish) the demo in ``out_dir`` and return where everything went.

    ``size`` images (default 3000; 120 with ``fast``) of ``image_size`` pixels are generated with
    ``seed``; ``baseline`` is any model preset trained next to ``mfclip-tiny``.
    """
    from mfclip.data.synth import SynthError, check_settings, generate_benchmark
    from mfclip.models.registry import list_models

    if baseline not in list_models():
        raise ConfigError(f"unknown baseline model {baseline!r}; presets: {', '.join(list_models())}")
    if baseline == MODEL:
        raise ConfigError(f"the baseline must differ from {MODEL}")
    plan = FAST if fast else FULL
    size = int(size if size is not None else plan["size"])
    check_settings(seed, size, image_size, workers)  # so that the error below is only about the folder
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    echo(f"[1/4] SYNTHETIC benchmark: {size} images of {image_size} px (seed {seed}) -> {out / 'data'}")
    tick = time.perf_counter()
    _check_reusable(out, {"size": size, "image_size": image_size, "seed": seed})
    try:
        data = generate_benchmark(
            out / "data", seed=seed, size=size, image_size=image_size, workers=workers, progress=not fast
        )
    except SynthError:
        raise ConfigError(
            f"{out / 'data'} holds files of another run, not this demo's benchmark; use another --out, "
            f"or delete {out}"
        ) from None
    seconds["data"] = time.perf_counter() - tick

    echo(f"[2/4] training {MODEL} and {baseline} on the seen generators, evaluating seen and unseen")
    tick = time.perf_counter()
    overrides = [*COMMON_OVERRIDES, *plan["overrides"], f"trainer.seed={seed}"]
    if workers is not None:
        overrides.append(f"data.num_workers={workers}")
    entries = [
        CompareEntry(MODEL, TRAIN_PRESET, (f"model.name={MODEL}",)),
        CompareEntry(baseline, TRAIN_PRESET, (f"model.name={baseline}",)),
    ]
    comparison = compare(
        entries,
        data.protocol_path,
        out_dir=out,
        overrides=overrides,
        workers=0 if fast else workers,
        plots=True,
        progress=not fast,
    )
    seconds["train_and_evaluate"] = time.perf_counter() - tick

    echo("[3/4] scoring a few test images with each trained model (mfclip.Detector)")
    tick = time.perf_counter()
    examples = _score_examples(data.manifest_path, comparison, seed)
    seconds["examples"] = time.perf_counter() - tick

    echo("[4/4] writing the report")
    tick = time.perf_counter()
    labels = [run.label for run in comparison.runs]
    summary = _summary(comparison, labels)
    files = _plots(out, comparison, labels)
    seconds["report"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    settings = {
        "synthetic": True,
        "size": size,
        "image_size": image_size,
        "seed": seed,
        "fast": fast,
        "models": labels,
        "train_preset": TRAIN_PRESET,
        "overrides": overrides,
        "cpu_cores": _cores(),
    }
    # Timings of the call that did all the work; a resumed call keeps them and adds its own.
    from_scratch = data.generated == data.num_images and all(r.status == "trained" for r in comparison.runs)
    scratch_seconds = (
        dict(seconds) if from_scratch else _recorded(out / "demo.json").get("from_scratch_seconds")
    )
    report_path = out / "REPORT.md"
    atomic_write_text(
        report_path,
        _report(settings, seconds, scratch_seconds, comparison, summary, examples, files, data.protocol_path),
    )
    atomic_write_json(
        out / "demo.json", {**settings, "seconds": seconds, "from_scratch_seconds": scratch_seconds}
    )
    result = DemoResult(out, report_path, comparison, summary, examples, seconds, files)
    _print_summary(result, echo)
    if seconds["total"] > SLOW_SECONDS:
        echo(_slow_run_note(seconds["total"]))
    return result


def _check_reusable(out: Path, settings: dict[str, int]) -> None:
    """Refuse an ``out`` whose benchmark was generated with other settings (it is never overwritten)."""
    recorded = _recorded(out / "data" / "synth.json") or _recorded(out / "demo.json")
    differing = {key: recorded[key] for key, value in settings.items() if recorded.get(key, value) != value}
    if differing:
        made = ", ".join(f"{key} {recorded[key]}" for key in settings if key in recorded)
        wanted = ", ".join(f"{key} {value}" for key, value in settings.items())
        raise ConfigError(
            f"{out}: holds a demo made with other settings ({made}; this run: {wanted}); use another --out, "
            f"or delete {out}"
        )


def _slow_run_note(total: float) -> str:
    """Why a demo took longer than usual: other processes competing for the CPU, when the load says so."""
    note = f"Note: this demo took {total / 60:.0f} min, far longer than on an idle machine (~3 min)"
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on every platform
        return note + "."
    cores = _cores()
    if load > cores:
        return note + f": the machine looked busy (load average {load:.1f} on {cores} core(s))."
    return note + f" (load average now {load:.1f} on {cores} core(s))."


# ---------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------


def _score_examples(manifest_path: Path, comparison: CompareResult, seed: int) -> pd.DataFrame:
    """A few test images (reals, seen fakes, unseen fakes) with each model's P(fake), via the Detector API."""
    from mfclip.engine.protocol import load_protocol
    from mfclip.inference import Detector

    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    protocol = load_protocol(manifest_path.parent / "protocol.yaml")
    seen = set(protocol.test["seen"].generators or [])
    test = manifest[manifest["split"] == "test"]
    rng = np.random.default_rng(seed)
    picks = []
    kinds = {
        "real": test[test["label"] == "0"],
        "seen fake": test[(test["label"] == "1") & test["generator"].isin(seen)],
        "unseen fake": test[(test["label"] == "1") & ~test["generator"].isin(seen)],
    }
    for kind, rows in kinds.items():
        if len(rows) == 0:
            continue
        if kind == "real":
            chosen = rows.iloc[
                np.sort(rng.choice(len(rows), min(EXAMPLES_PER_KIND, len(rows)), replace=False))
            ]
        else:  # fakes of different generators
            generators = sorted(set(rows["generator"]))
            picked = rng.choice(generators, min(EXAMPLES_PER_KIND, len(generators)), replace=False)
            chosen = pd.concat([rows[rows["generator"] == g].iloc[[0]] for g in sorted(picked)])
        for _, row in chosen.iterrows():
            picks.append({"image": row["path"], "truth": kind, "generator": row["generator"] or "—"})
    examples = pd.DataFrame(picks)
    paths = [str(manifest_path.parent / p) for p in examples["image"]]
    for run in comparison.runs:
        detector = Detector.from_pretrained(run.run_dir / runinfo.BEST_DIR, device="cpu")
        predictions = detector.predict(paths)
        examples[run.label] = [p.p_fake for p in predictions]
    return examples


def _summary(comparison: CompareResult, labels: Sequence[str]) -> pd.DataFrame:
    """Overall AUC, AP and EER of each model on each test set (rows: test sets)."""
    frames = {}
    for metric, table in comparison.tables.items():
        overall = table[(table["level"] == "frame") & (table["group_by"] == "")].set_index("test_set")
        for label in labels:
            frames[(label, metric)] = overall[label]
    summary = pd.DataFrame(frames)
    summary.columns = pd.MultiIndex.from_tuples(summary.columns, names=["model", "metric"])
    return summary


def _plots(out: Path, comparison: CompareResult, labels: Sequence[str]) -> dict[str, Path]:
    """ROC curves of both models per test set, and AUC per generator as grouped bars."""
    from mfclip.metrics import find_predictions, load_predictions, roc_curve
    from mfclip.metrics.plots import plot_roc

    files: dict[str, Path] = {}
    predictions = {run.label: find_predictions(run.run_dir) for run in comparison.runs}
    test_sets = list(dict.fromkeys(comparison.table["test_set"]))
    for test_set in test_sets:
        curves = []
        for label in labels:
            frame = load_predictions(predictions[label][test_set], columns=())
            fpr, tpr = roc_curve(frame["label"].to_numpy(), frame["p_fake"].to_numpy())
            auc = comparison.tables["auc"]
            value = auc[(auc["test_set"] == test_set) & (auc["group_by"] == "") & (auc["level"] == "frame")][
                label
            ]
            curves.append((f"{label} (AUC {float(value.iloc[0]):.3f})", fpr, tpr))
        files[f"roc_{test_set}"] = plot_roc(
            curves, out / f"roc_{test_set}.png", title=f"ROC on {test_set} generators (SYNTHETIC)"
        )
    files["auc_by_generator"] = _plot_generator_bars(
        comparison.tables["auc"], labels, out / "auc_by_generator.png"
    )
    return files


def _plot_generator_bars(table: pd.DataFrame, labels: Sequence[str], path: Path) -> Path:
    from matplotlib.figure import Figure

    rows = table[(table["group_by"] == "generator") & (table["level"] == "frame")]
    names = [f"{g}\n({t})" for g, t in zip(rows["group"], rows["test_set"], strict=True)]
    figure = Figure(figsize=(max(6.0, 0.9 * len(names) + 2), 4.4))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(names))
    for index, label in enumerate(labels):
        axes.bar(x + (index - (len(labels) - 1) / 2) * width, rows[label].to_numpy(), width, label=label)
    axes.axhline(0.5, color="0.5", linestyle="--", linewidth=0.8)
    axes.set_xticks(x, names, fontsize=7)
    axes.set_ylim(0, 1)
    axes.set_ylabel("AUC (fakes of the generator vs. all reals)")
    axes.set_title("AUC per generator (SYNTHETIC)")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "n/a" if not np.isfinite(number) else f"{number:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _report(
    settings: dict[str, Any],
    seconds: dict[str, float],
    scratch_seconds: dict[str, float] | None,
    comparison: CompareResult,
    summary: pd.DataFrame,
    examples: pd.DataFrame,
    files: dict[str, Path],
    protocol_path: Path,
) -> str:
    labels = list(settings["models"])
    out = comparison.out_dir
    parts = [
        "# mfclip demo on SYNTHETIC data",
        "",
        f"> {SYNTHETIC_BANNER}",
        "",
        f"- Benchmark: {settings['size']} SYNTHETIC images of {settings['image_size']} px, seed "
        f"{settings['seed']} (`data/`, protocol `{protocol_path.relative_to(out)}`): train and select on the "
        "seen generators, test on the seen and the held-out unseen generators.",
        f"- Models: {', '.join(f'`{m}`' for m in labels)}, training preset `{settings['train_preset']}` with "
        f"`{' '.join(settings['overrides'])}`.",
        f"- Time on {settings['cpu_cores']} CPU core(s): " + _timing(seconds, scratch_seconds) + ".",
    ]
    if settings["fast"]:
        parts.append("- **--fast smoke run**: a few training steps only; the numbers below are meaningless.")
    parts += ["", "## Results (SYNTHETIC)", ""]
    header = ["test set"] + [
        f"{label} {metric.upper()}" for label in labels for metric in ("auc", "ap", "eer")
    ]
    rows = [
        [
            test_set,
            *(
                _fmt(summary.loc[test_set, (label, metric)])
                for label in labels
                for metric in ("auc", "ap", "eer")
            ),
        ]
        for test_set in summary.index
    ]
    parts += [_table(header, rows), ""]
    parts += [
        "Best validation AUC (seen generators): "
        + ", ".join(f"{run.label} {_fmt(run.best_val_auc)}" for run in comparison.runs)
        + ".",
        "",
    ]
    auc = comparison.tables["auc"]
    per_generator = auc[(auc["group_by"] == "generator") & (auc["level"] == "frame")]
    parts += ["## AUC per generator (SYNTHETIC)", ""]
    parts += [
        _table(
            ["test set", "generator", *labels],
            [
                [r["test_set"], r["group"], *(_fmt(r[label]) for label in labels)]
                for _, r in per_generator.iterrows()
            ],
        ),
        "",
    ]
    for key, path in files.items():
        parts.append(f"![{key}]({path.relative_to(out)})")
    parts += ["", "## A few test images (SYNTHETIC), scored with `mfclip.Detector`", ""]
    parts += [
        _table(
            ["image", "truth", "generator", *(f"{label} P(fake)" for label in labels)],
            [
                [f"`{r['image']}`", r["truth"], r["generator"], *(_fmt(r[label]) for label in labels)]
                for _, r in examples.iterrows()
            ],
        ),
        "",
        "## Files",
        "",
        "- `data/`: the SYNTHETIC benchmark (`manifest.csv`, `protocol.yaml`, `README.md`, images)",
        "- `runs/<model>/`: each training run (`config.yaml`, `best/` checkpoint, `logs/`, "
        "`eval/<test_set>/` with predictions, metrics, report and plots)",
        "- `comparison.md`, `comparison.csv`: the full side-by-side tables (AUC, AP, EER; per generator and "
        "forgery type)",
        "- `demo.json`: the settings and timings of this run",
        "",
        "Rebuild the tables from the saved predictions with "
        f"`mfclip report {' '.join(f'runs/{label}' for label in labels)}`.",
        "",
    ]
    return "\n".join(parts)


def _timing(seconds: dict[str, float], scratch_seconds: dict[str, float] | None) -> str:
    if scratch_seconds is None:
        return f"{seconds['total']:.0f} s in this call (it resumed earlier work)"
    text = (
        f"{scratch_seconds['total']:.0f} s from scratch (data {scratch_seconds['data']:.0f} s, training and "
        f"evaluation {scratch_seconds['train_and_evaluate']:.0f} s)"
    )
    if seconds is not scratch_seconds and seconds != scratch_seconds:
        text += f"; this call resumed that work in {seconds['total']:.0f} s"
    return text


def _recorded(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _print_summary(result: DemoResult, echo: Callable[[str], None]) -> None:
    labels = [run.label for run in result.comparison.runs]
    echo("")
    echo("SYNTHETIC demo results (AUC; synthetic images, not real faces):")
    echo("  " + "test set".ljust(10) + "".join(label.rjust(16) for label in labels))
    for test_set in result.summary.index:
        cells = "".join(_fmt(result.summary.loc[test_set, (label, "auc")]).rjust(16) for label in labels)
        echo("  " + str(test_set).ljust(10) + cells)
    echo("")
    echo(f"Report:      {result.report_path}")
    echo(f"Comparison:  {result.comparison.markdown_path} (+ .csv)")
    echo(
        f"Runs:        {result.out_dir / 'runs'}/<model>/ (best/ checkpoints, eval/ predictions and reports)"
    )
    echo(f"Data:        {result.out_dir / 'data'} (SYNTHETIC benchmark)")
    echo(f"Done in {result.seconds['total']:.0f} s.")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
