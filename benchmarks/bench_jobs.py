"""Resumable-job logs at a million rows: the evaluation score log and the prediction output.

Side by side in one run:
  1. evaluate's score log (mfclip.utils.jobs.AppendLog, CSV rows): append 1M scores in batches of 64,
     then read them back as evaluate does when a test set is complete or resumed; reference: the previous
     release's mechanism, parquet chunks of 16,384 rows read back with pandas;
  2. predict's output: append 1M rows in batches of 32, then collect the paths already done (--resume).

Times are wall-clock seconds; memory is the peak traced by tracemalloc (numpy and Python allocations).

    python benchmarks/bench_jobs.py            # 1,000,000 rows
    python benchmarks/bench_jobs.py --quick    # 100,000 rows (smoke run)

Writes docs/benchmarks/jobs.md and jobs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfclip.engine.evaluate import SCORE_RECORDS
from mfclip.engine.evaluate import read_scores as read_score_log
from mfclip.inference.predict import done_paths, output_log
from mfclip.utils.jobs import AppendLog


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, peak traced MiB)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def append_scores(path: Path, scores: np.ndarray) -> None:
    with AppendLog(path, SCORE_RECORDS) as log:
        for start in range(0, len(scores), 64):
            rows = range(start, min(start + 64, len(scores)))
            log.append(
                {"row": row, "p_fake": score, "error": ""}
                for row, score in zip(rows, scores[start : start + 64].tolist(), strict=True)
            )


def read_scores(path: Path) -> pd.DataFrame:
    return read_score_log(AppendLog(path, SCORE_RECORDS))


def append_chunks(folder: Path, scores: np.ndarray) -> None:
    """The previous release: a DataFrame per batch, concatenated and written every 16,384 rows."""
    folder.mkdir()
    buffer: list[pd.DataFrame] = []
    buffered, chunk = 0, 0
    for start in range(0, len(scores), 64):
        part = scores[start : start + 64]
        buffer.append(pd.DataFrame({"row": np.arange(start, start + len(part)), "p_fake": part, "error": ""}))
        buffered += len(part)
        if buffered >= 16384 or start + 64 >= len(scores):
            frame = pd.concat(buffer, ignore_index=True).astype({"p_fake": "float64", "error": "str"})
            frame.to_parquet(folder / f"chunk-{chunk:06d}.parquet", index=False)
            buffer, buffered, chunk = [], 0, chunk + 1


def read_chunks(folder: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(path) for path in sorted(folder.glob("chunk-*.parquet"))]
    return pd.concat(frames, ignore_index=True).drop_duplicates("row", keep="last")


def append_predictions(path: Path, rows: int) -> None:
    with output_log(path) as log:
        for start in range(0, rows, 32):
            log.append(
                {
                    "path": f"/data/test/{index // 1000:04d}/{index:07d}.png",
                    "p_fake": 0.5,
                    "label": "fake",
                    "p_fake_max": None,
                    "frames": None,
                    "box": None,
                    "error": None,
                }
                for index in range(start, min(start + 32, rows))
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k rows")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
    )
    args = parser.parse_args()
    if args.quick:
        args.rows = 100_000
    scores = np.random.default_rng(0).random(args.rows).astype(np.float32)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _, t_append, m_append = measure(lambda: append_scores(folder / "scores.csv", scores))
        ours, t_read, m_read = measure(lambda: read_scores(folder / "scores.csv"))
        _, r_append, rm_append = measure(lambda: append_chunks(folder / "chunks", scores))
        reference, r_read, rm_read = measure(lambda: read_chunks(folder / "chunks"))
        same = bool(np.array_equal(ours["p_fake"].to_numpy(), reference["p_fake"].to_numpy()))
        results.append(
            {
                "task": f"evaluate: append {args.rows:,} scores, batches of 64",
                "ours_s": t_append,
                "ours_mib": m_append,
                "reference": "parquet chunks of 16,384 rows (previous release)",
                "reference_s": r_append,
                "reference_mib": rm_append,
                "note": f"log {(folder / 'scores.csv').stat().st_size / 2**20:.1f} MiB",
            }
        )
        results.append(
            {
                "task": f"evaluate: read {args.rows:,} scores back",
                "ours_s": t_read,
                "ours_mib": m_read,
                "reference": "parquet chunks read and concatenated",
                "reference_s": r_read,
                "reference_mib": rm_read,
                "note": "identical scores" if same else "SCORES DIFFER",
            }
        )
        _, p_append, pm_append = measure(lambda: append_predictions(folder / "out.csv", args.rows))
        done, p_done, pm_done = measure(lambda: done_paths(folder / "out.csv"))
        assert len(done) == args.rows
        results.append(
            {
                "task": f"predict: append {args.rows:,} rows, batches of 32",
                "ours_s": p_append,
                "ours_mib": pm_append,
            }
        )
        results.append(
            {
                "task": f"predict --resume: paths already done, {args.rows:,} rows",
                "ours_s": p_done,
                "ours_mib": pm_done,
            }
        )
    result = {
        "rows": args.rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
        "pandas": pd.__version__,
        "load_average": os.getloadavg()[0],
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    table = render(result)
    print(table)
    if not args.quick:
        (args.out / "jobs.md").write_text(table + "\n")
        (args.out / "jobs.json").write_text(json.dumps(result, indent=2) + "\n")


def render(result: dict[str, Any]) -> str:
    def cell(row: dict[str, Any], key: str, spec: str) -> str:
        return format(row[key], spec) if row.get(key) is not None else "—"

    lines = [
        "# Resumable-job logs benchmark",
        "",
        f"{result['rows']:,} rows; {result['machine']}, pandas {result['pandas']}; load average "
        f"{result['load_average']:.1f} at the start; process max RSS {result['max_rss_mib']:.0f} MiB.",
        "Times are wall-clock seconds; memory is the peak traced by tracemalloc during the task.",
        "",
        "| task | ours (s) | ours peak (MiB) | reference | reference (s) | reference peak (MiB) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        lines.append(
            f"| {row['task']} | {cell(row, 'ours_s', '.2f')} | {cell(row, 'ours_mib', '.0f')} | "
            f"{row.get('reference', '—')} | {cell(row, 'reference_s', '.2f')} | "
            f"{cell(row, 'reference_mib', '.0f')} | {row.get('note', '')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
