"""Prediction throughput on the CPU: the bare model vs the Detector API vs the whole `mfclip predict`
pipeline, side by side in one run, at several batch sizes.

For a randomly initialised ``mfclip-vit-b16`` (``--quick``: ``mfclip-tiny``), on the same photos:

  reference   ``model.inference_module()`` on images already decoded, resized and stacked as a tensor:
              the model alone, what an ideal pipeline could reach;
  Detector    ``Detector.predict(list of PIL images)``: resize + crop to the model's size, batching,
              the model;
  predict     ``predict_files`` (what ``mfclip predict`` runs) on PNG files: decode in DataLoader
              workers, resize, the model, rows appended to a CSV and flushed per batch.

Rounds are interleaved so machine drift hits every variant alike; the table reports the median
images/s. Timings use all CPU threads torch sees.

    python benchmarks/bench_predict.py            # mfclip-vit-b16 at 224 px, batch 1/8/32
    python benchmarks/bench_predict.py --quick    # mfclip-tiny, few images (smoke run)

Writes docs/benchmarks/predict.md and predict.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata
from tqdm import tqdm

from mfclip import Detector
from mfclip.inference.predict import PredictOptions, predict_files
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.utils.io import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]


def photos(count: int, size: int = 320) -> list[Image.Image]:
    """``count`` different square crops of scikit-image's photos."""
    sources = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    images = []
    for i in range(count):
        source = sources[i % len(sources)]
        height, width = source.shape[:2]
        side = min(size, height, width)
        top = (i * 37) % (height - side + 1)
        left = (i * 53) % (width - side + 1)
        images.append(Image.fromarray(np.ascontiguousarray(source[top : top + side, left : left + side])))
    return images


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="mfclip-tiny and few images (smoke run)")
    parser.add_argument(
        "--model", default=None, help="model preset (default mfclip-vit-b16; quick: mfclip-tiny)"
    )
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument(
        "--images", type=int, default=None, help="images per measurement (default 64; quick 32)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    preset = args.model or ("mfclip-tiny" if args.quick else "mfclip-vit-b16")
    count = args.images or (32 if args.quick else 64)
    rounds = args.rounds or (1 if args.quick else 3)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="mfclip-bench-predict-") as tmp:
        root = Path(tmp)
        checkpoint = save_checkpoint(
            create_model(preset), root / "checkpoint", {"name": f"{preset} (random init)"}
        )
        images = photos(count)
        folder = root / "images"
        folder.mkdir()
        for i, image in enumerate(images):
            image.save(folder / f"{i:04d}.png")
        detector = Detector.from_pretrained(checkpoint, device="cpu")
        inference = detector.model.inference_module().eval()
        tensors = torch.stack([detector.prepare(image).tensor for image in images])

        def reference(batch: int) -> None:
            with torch.inference_mode():
                for start in range(0, count, batch):
                    inference(tensors[start : start + batch])

        def api(batch: int) -> None:
            detector.batch_size = batch
            detector.predict(images)

        def pipeline(batch: int) -> None:
            detector.batch_size = batch
            options = PredictOptions(batch_size=batch, progress=False, overwrite=True)
            predict_files(detector, [folder], root / "scores.csv", options)

        variants = {
            "reference (model on tensors)": reference,
            "Detector.predict": api,
            "mfclip predict": pipeline,
        }
        # Warm-up: first calls pay for allocator growth and lazy initialisation.
        reference(min(batch_sizes))
        api(min(batch_sizes))
        seconds: dict[tuple[str, int], list[float]] = {}
        steps = rounds * len(batch_sizes) * len(variants)
        with tqdm(total=steps, desc="bench_predict", unit="run") as progress:
            for _ in range(rounds):
                for batch in batch_sizes:
                    for name, run in variants.items():
                        seconds.setdefault((name, batch), []).append(timed(lambda run=run, b=batch: run(b)))
                        progress.update()

    results = []
    for (name, batch), values in seconds.items():
        median = statistics.median(values)
        results.append(
            {"variant": name, "batch_size": batch, "seconds": median, "images_per_s": count / median}
        )
    info = {"preset": preset, "count": count, "rounds": rounds, "quick": args.quick}
    write_report(results, info, args.out)


def write_report(results: list[dict[str, Any]], info: dict[str, Any], out: Path) -> None:
    threads = torch.get_num_threads()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {threads}"
    names = list(dict.fromkeys(r["variant"] for r in results))
    batch_sizes = sorted({r["batch_size"] for r in results})
    by_key = {(r["variant"], r["batch_size"]): r for r in results}
    lines = [
        "# Prediction throughput (CPU)",
        "",
        f"Model `{info['preset']}` (random initialisation), {info['count']} photos per measurement, "
        f"median of {info['rounds']} interleaved round(s); {machine}; torch {torch.__version__}."
        + (" Quick smoke run: not a measurement to quote." if info["quick"] else ""),
        "",
        "| batch size | " + " | ".join(f"{name} (images/s)" for name in names) + " | pipeline / model |",
        "|---:|" + "---:|" * len(names) + "---:|",
    ]
    for batch in batch_sizes:
        cells = [f"{by_key[(name, batch)]['images_per_s']:.1f}" for name in names]
        ratio = by_key[(names[-1], batch)]["images_per_s"] / by_key[(names[0], batch)]["images_per_s"]
        lines.append(f"| {batch} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    lines += [
        "",
        "*reference*: the model's inference module on decoded, resized tensors (no I/O). *Detector.predict*: "
        "PIL images through the Python API (resize, crop, batching). *mfclip predict*: PNG files through "
        "`predict_files` (DataLoader decoding, resize, model, CSV written per batch).",
        "",
        "Regenerate: `python benchmarks/bench_predict.py` (`--quick` for a smoke run).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(out / "predict.md", text)
    info = {**info, "machine": machine, "torch": torch.__version__}
    atomic_write_json(out / "predict.json", {"info": info, "results": results})


if __name__ == "__main__":
    main()
