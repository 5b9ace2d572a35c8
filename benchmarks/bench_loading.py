"""Decode + transform throughput of one data-loading worker: ManifestDataset vs a plain PIL/torchvision
pipeline, side by side in one run.

For PNG and JPEG files (512 px photos by default, like the face crops and DiFF images models train on)
at input sizes 224 and 256, in-process (0 workers, i.e. what one DataLoader worker does), measures:

  reference       ``Image.open(p).convert("RGB")`` + torchvision v2 Resize(S, bicubic, antialias) +
                  CenterCrop(S) + ToDtype(float32, scale) — the usual hand-written pipeline;
  ours eval       ``ManifestDataset(train=False)[i]``: robust decode (EXIF, modes, pixel limit), resize
                  and crop, and the item's precomputed prompt tokens;
  ours eval+draft the same with ``jpeg_draft`` (JPEG decoded at reduced scale; JPEG rows only);
  ours train      ``train=True`` with the default augmentation (flip p=0.5, JPEG p=0.1, blur p=0.1);
  ours train-all  every augmentation step on every image (flip, colour jitter, downscale, blur, noise,
                  JPEG): the worst case.

Rounds are interleaved so machine drift hits every variant alike; the table reports the median
images/s. The reference and ``ours eval`` outputs are compared (largest absolute difference).

    python benchmarks/bench_loading.py            # 64 images per format, 5 rounds
    python benchmarks/bench_loading.py --quick    # 8 images, 2 rounds (smoke run)

Writes docs/benchmarks/loading.md and loading.json.
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
import pandas as pd
import torch
from PIL import Image
from skimage import data as skdata
from torchvision.transforms import v2
from tqdm import tqdm

from mfclip.data.dataset import ManifestDataset
from mfclip.data.transforms import AugmentConfig, TransformConfig
from mfclip.utils.io import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
EVERY_STEP = AugmentConfig(
    hflip_p=1.0, jpeg_p=1.0, blur_p=1.0, color_jitter_p=1.0, downscale_p=1.0, noise_p=1.0
)


def write_images(directory: Path, count: int, source_size: int, fmt: str) -> list[str]:
    """``count`` crops of scikit-image photos, ``source_size`` px square, saved as PNG or JPEG (q 95)."""
    rng = np.random.default_rng(0)
    photos = [getattr(skdata, name)() for name in SOURCE_PHOTOS]
    names = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize(
            (source_size, source_size), Image.Resampling.BICUBIC
        )
        name = f"{index:04d}.{'jpg' if fmt == 'jpeg' else 'png'}"
        if fmt == "jpeg":
            crop.save(directory / name, quality=95)
        else:
            crop.save(directory / name)
        names.append(name)
    return names


def reference_pipeline(size: int) -> Callable[[Path], torch.Tensor]:
    transform = v2.Compose(
        [
            v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )

    def load(path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return transform(image.convert("RGB"))

    return load


def time_pass(function: Callable[[int], Any], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        function(index)
    return count / (time.perf_counter() - start)


def run(count: int, rounds: int, source_size: int, sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for fmt in ("png", "jpeg"):
            folder = root / fmt
            folder.mkdir()
            names = write_images(folder, count, source_size, fmt)
            df = pd.DataFrame({"path": names, "label": [i % 2 for i in range(count)], "split": "train"})
            df["generator"] = np.where(df["label"] == 1, "SDXL", "")
            for size in sizes:
                reference = reference_pipeline(size)
                variants: dict[str, Callable[[int], Any]] = {
                    "reference": lambda i, ref=reference, folder=folder, names=names: ref(folder / names[i]),
                }
                datasets = {
                    "ours eval": ManifestDataset(df, folder, size),
                    "ours train": ManifestDataset(df, folder, size, train=True),
                    "ours train-all": ManifestDataset(
                        df, folder, size, transform=TransformConfig(augment=EVERY_STEP), train=True
                    ),
                }
                if fmt == "jpeg":
                    datasets["ours eval+draft"] = ManifestDataset(
                        df, folder, size, transform=TransformConfig(jpeg_draft=True)
                    )
                for name, dataset in datasets.items():
                    variants[name] = lambda i, ds=dataset: ds[i]
                for function in variants.values():  # warm-up: file cache, first-call costs
                    function(0)
                speeds: dict[str, list[float]] = {name: [] for name in variants}
                for _ in tqdm(range(rounds), desc=f"{fmt} {size}px", leave=False):
                    for name, function in variants.items():
                        speeds[name].append(time_pass(function, count))
                difference = max(
                    float((reference(folder / names[i]) - datasets["ours eval"][i]["image"]).abs().max())
                    for i in range(count)
                )
                base = statistics.median(speeds["reference"])
                for name, values in speeds.items():
                    median = statistics.median(values)
                    results.append(
                        {
                            "format": fmt,
                            "input_size": size,
                            "variant": name,
                            "images_per_s": median,
                            "ms_per_image": 1000.0 / median,
                            "relative_to_reference": median / base,
                            "max_abs_diff_vs_reference": difference if name == "ours eval" else None,
                        }
                    )
    return results


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Data loading throughput (one worker)",
        "",
        f"Decode + resize/crop (+ augmentation) of {meta['source_size']} px photos, in-process, "
        f"{meta['count']} images per format, median of {meta['rounds']} interleaved rounds. "
        "Throughput with N DataLoader workers is roughly N times the per-worker figure, up to the "
        "number of CPU cores.",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}; Pillow {meta['pillow']}."
        + (" **Quick run: small sample, timings are indicative only.**" if meta["quick"] else ""),
        "",
        "| format | input | variant | images/s | ms/image | vs reference |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in results:
        lines.append(
            f"| {row['format']} | {row['input_size']} | {row['variant']} | {row['images_per_s']:.1f} | "
            f"{row['ms_per_image']:.2f} | {row['relative_to_reference']:.2f}x |"
        )
    diffs = [r for r in results if r["max_abs_diff_vs_reference"] is not None]
    lines += [
        "",
        "Largest absolute pixel difference between `ours eval` and the reference output (values in [0, 1]; "
        "both resize with Pillow's bicubic filter, so differences come only from rounding of the resized "
        "long side): "
        + ", ".join(f"{r['format']} {r['input_size']}: {r['max_abs_diff_vs_reference']:.4f}" for r in diffs)
        + ".",
        "",
        "`ours eval` also returns the row's prompt tokens and checks the pixel limit; `eval+draft` decodes "
        "JPEGs at a reduced DCT scale (`TransformConfig.jpeg_draft`), trading exact pixels for speed.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--count", type=int, default=None, help="images per format")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--source-size", type=int, default=512, help="side of the stored images")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 256])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    count = args.count or (8 if args.quick else 64)
    rounds = args.rounds or (2 if args.quick else 5)
    torch.set_num_threads(1)  # one worker = one core
    results = run(count, rounds, args.source_size, args.sizes)
    meta = {
        "quick": args.quick,
        "count": count,
        "rounds": rounds,
        "source_size": args.source_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "torch": torch.__version__,
        "pillow": Image.__version__,
    }
    text = markdown(results, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "loading.md", text)
    atomic_write_json(args.out / "loading.json", {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
