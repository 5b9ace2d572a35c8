"""Evaluation of a million predictions: mfclip.metrics vs scikit-learn (and torchmetrics) side by side.

Measures wall time and peak traced memory (tracemalloc: numpy and Python allocations) of
  1. the scalar metrics AUC, AP, EER, ACC on all rows,
  2. the same per group: 13 generators + 4 forgery types, each group's fakes with all reals,
  3. bootstrap intervals (overall and every group) with N resamples,
  4. the complete evaluate_predictions() call (groups + video level + bootstrap),
and the largest difference between our values and the reference ones.

    python benchmarks/bench_metrics.py            # 1M rows, 200 resamples
    python benchmarks/bench_metrics.py --quick    # 100k rows, 20 resamples (smoke run)

Writes docs/benchmarks/metrics.md and metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfclip.metrics import bootstrap_ci, compute_metrics, evaluate_predictions

GENERATORS = {
    "Midjourney": "entire",
    "SDXL": "entire",
    "FreeDoM_T": "entire",
    "HPS": "entire",
    "SDXL_Refine": "entire",
    "LoRA": "entire",
    "DreamBooth": "entire",
    "FreeDoM_I": "entire",
    "DiffFace": "swap",
    "DCFace": "swap",
    "Imagic": "edit",
    "cycle_diff": "edit",
    "CoDiff": "edit",
}
FRAMES_PER_VIDEO = 20


def make_predictions(n: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic predictions: half real, fakes spread over 13 generators of unequal difficulty;
    float32 softmax-like scores (so some tie), 20 frames per video."""
    rng = np.random.default_rng(seed)
    video = np.arange(n) // FRAMES_PER_VIDEO
    n_videos = int(video[-1]) + 1
    video_label = (rng.random(n_videos) < 0.5).astype(np.int8)
    video_generator = rng.integers(0, len(GENERATORS), n_videos)
    labels = video_label[video]
    codes = np.where(labels == 1, video_generator[video], len(GENERATORS))
    difficulty = np.append(np.linspace(0.5, 2.5, len(GENERATORS)), 0.0)
    logits = rng.normal(difficulty[codes] - 1.0, 1.5).astype(np.float32)
    names = [*GENERATORS, ""]
    forgery = [*GENERATORS.values(), ""]
    forgery_names = sorted(set(forgery))
    return pd.DataFrame(
        {
            "label": labels,
            "p_fake": (1 / (1 + np.exp(-logits))).astype(np.float32),
            "generator": pd.Categorical.from_codes(codes, names),
            "forgery_type": pd.Categorical.from_codes(
                np.array([forgery_names.index(f) for f in forgery])[codes], forgery_names
            ),
            "video_id": pd.Categorical.from_codes(video, [f"v{i}" for i in range(n_videos)]),
        }
    )


def measure(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float, float]:
    """(result, best wall seconds, peak traced MiB of the first run)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    best = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    for _ in range(repeat - 1):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return result, best, peak


# ------------------------------------------------------------------------------ reference code


def sklearn_eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Our EER definition computed from scikit-learn's full ROC curve."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    gap = 1 - tpr - fpr
    j = int(np.argmax(gap <= 0))
    return float(fpr[j - 1] + gap[j - 1] / (gap[j - 1] - gap[j]) * (fpr[j] - fpr[j - 1]))


def sklearn_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

    return {
        "auc": roc_auc_score(labels, scores),
        "ap": average_precision_score(labels, scores),
        "eer": sklearn_eer(labels, scores),
        "acc": accuracy_score(labels, scores > 0.5),
    }


def torchmetrics_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    import torch
    from torchmetrics.functional.classification import (
        binary_accuracy,
        binary_auroc,
        binary_average_precision,
        binary_eer,
    )

    preds, target = torch.from_numpy(scores), torch.from_numpy(labels.astype(np.int64))
    return {
        "auc": float(binary_auroc(preds, target)),
        "ap": float(binary_average_precision(preds, target)),
        "eer": float(binary_eer(preds, target)),  # nearest ROC vertex, FPR/FNR averaged
        "acc": float(binary_accuracy(preds, target, threshold=0.5)),
    }


def sklearn_grouped(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    labels = frame["label"].to_numpy()
    scores = frame["p_fake"].to_numpy()
    reals = labels == 0
    out = {}
    for column in ("generator", "forgery_type"):
        values = frame[column].to_numpy()
        for group in sorted(set(values[~reals])):
            rows = reals | (values == group)
            out[f"{column}={group}"] = sklearn_metrics(labels[rows], scores[rows])
    return out


def sklearn_bootstrap_auc(labels: np.ndarray, scores: np.ndarray, n_resamples: int) -> list[float]:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    values = []
    for _ in range(n_resamples):
        index = rng.integers(0, len(labels), len(labels))
        values.append(roc_auc_score(labels[index], scores[index]))
    return values


# ------------------------------------------------------------------------------------------ run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k rows, 20 resamples")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
    )
    args = parser.parse_args()
    if args.quick:
        args.rows, args.resamples = 100_000, 20
    warnings.simplefilter("ignore")

    frame = make_predictions(args.rows)
    labels = frame["label"].to_numpy()
    scores = frame["p_fake"].to_numpy()
    n_groups = 13 + 3
    reference_resamples = max(2, min(5, args.resamples))
    torchmetrics_metrics(labels[:1000], scores[:1000])  # import and warm up outside the timings
    sklearn_metrics(labels[:1000], scores[:1000])

    rows: list[dict[str, Any]] = []

    ours, t_ours, m_ours = measure(lambda: compute_metrics(labels, scores), repeat=2)
    ref, t_ref, m_ref = measure(lambda: sklearn_metrics(labels, scores), repeat=2)
    tm, t_tm, m_tm = measure(lambda: torchmetrics_metrics(labels, scores), repeat=2)
    rows.append(
        {
            "task": f"AUC+AP+EER+ACC, {args.rows:,} rows",
            "ours_s": t_ours,
            "ours_mib": m_ours,
            "reference": "scikit-learn",
            "reference_s": t_ref,
            "reference_mib": m_ref,
            "max_abs_diff": max(abs(ours[k] - ref[k]) for k in ref),
        }
    )
    rows.append(
        {
            "task": f"AUC+AP+EER+ACC, {args.rows:,} rows",
            "ours_s": t_ours,
            "ours_mib": m_ours,
            "reference": "torchmetrics (EER: nearest vertex)",
            "reference_s": t_tm,
            "reference_mib": m_tm,
            "max_abs_diff": max(abs(ours[k] - tm[k]) for k in ("auc", "ap", "acc")),
            "eer_diff": abs(ours["eer"] - tm["eer"]),
        }
    )

    grouped, t_ours, m_ours = measure(
        lambda: evaluate_predictions(frame, group_by=("generator", "forgery_type"), video=False)
    )
    ref, t_ref, m_ref = measure(lambda: sklearn_grouped(frame))
    diff = max(
        abs(grouped["groups"][key.split("=")[0]][key.split("=")[1]][name] - values[name])
        for key, values in ref.items()
        for name in values
    )
    rows.append(
        {
            "task": f"overall + {n_groups} groups (13 generators, 3 forgery types)",
            "ours_s": t_ours,
            "ours_mib": m_ours,
            "reference": "scikit-learn, one call per group",
            "reference_s": t_ref,
            "reference_mib": m_ref,
            "max_abs_diff": diff,
        }
    )

    _, t_ours, m_ours = measure(lambda: bootstrap_ci(labels, scores, ["auc"], n_resamples=args.resamples))
    _, t_ref, m_ref = measure(lambda: sklearn_bootstrap_auc(labels, scores, reference_resamples))
    rows.append(
        {
            "task": f"bootstrap AUC interval, {args.resamples} resamples",
            "ours_s": t_ours,
            "ours_mib": m_ours,
            "reference": f"scikit-learn resampling ({reference_resamples} timed, scaled)",
            "reference_s": t_ref * args.resamples / reference_resamples,
            "reference_mib": m_ref,
            "max_abs_diff": None,
        }
    )

    _, t_ours, m_ours = measure(
        lambda: evaluate_predictions(frame, group_by=("generator", "forgery_type"), bootstrap=args.resamples)
    )
    rows.append(
        {
            "task": f"evaluate_predictions: {n_groups} groups + video level + {args.resamples} resamples",
            "ours_s": t_ours,
            "ours_mib": m_ours,
            "reference": "scikit-learn per group, once + once per resample (scaled, frame level only)",
            "reference_s": rows[2]["reference_s"] * (args.resamples + 1),
            "reference_mib": None,
            "max_abs_diff": None,
        }
    )

    result = {
        "benchmark": "metrics",
        "rows": args.rows,
        "resamples": args.resamples,
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
        "numpy": np.__version__,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": rows,
    }
    table = render(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.md").write_text(table + "\n")
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")


def render(result: dict[str, Any]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        "# Metrics benchmark",
        "",
        f"{result['rows']:,} predictions, {result['resamples']} bootstrap resamples"
        + (" (quick smoke run)" if result["quick"] else "")
        + f"; {result['machine']}, numpy {result['numpy']}; process max RSS {result['max_rss_mib']:.0f} MiB.",
        "Times are wall-clock seconds; memory is the peak traced by tracemalloc during the task. "
        "Reference bootstrap times are scaled from a few timed resamples.",
        "",
        "| task | ours (s) | ours peak (MiB) | reference | reference (s) | reference peak (MiB) | speed-up "
        "| max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        speedup = row["reference_s"] / row["ours_s"] if row["reference_s"] else None
        diff = fmt(row["max_abs_diff"], ".1e")
        if "eer_diff" in row:
            diff += f" (EER {row['eer_diff']:.1e})"
        cells = [
            row["task"],
            f"{row['ours_s']:.3f}",
            fmt(row["ours_mib"], ".0f"),
            row["reference"],
            f"{row['reference_s']:.3f}",
            fmt(row["reference_mib"], ".0f"),
            fmt(speedup, ".1f") + "×",
            diff,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
