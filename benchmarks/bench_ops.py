"""Richest-patch selection + SRM residual: batched torch operators vs the per-sample reference loop.

The reference does what the released MFCLIP code does, one image at a time: 8-bit luma in NumPy,
scikit-image ``graycomatrix`` + ``graycoprops("homogeneity")`` for each grid patch, ``argmin``, then
the SRM ``conv2d`` + Hardtanh on the chosen patch alone. Both run on the same images in the same
process; the script checks that every image gets the same patch and the same residual, then writes
``docs/benchmarks/ops.md`` and ``docs/benchmarks/ops.json``.

    python benchmarks/bench_ops.py                 # 64 images at 224 px on the CPU
    python benchmarks/bench_ops.py --device cuda
    python benchmarks/bench_ops.py --quick         # small smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import skimage
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.feature import graycomatrix, graycoprops
from tqdm import tqdm

from mfclip.ops import INPUT_SCALES, LUMA_WEIGHTS, SRM_CLIP, richest_patch, srm_conv_weight, srm_residual
from mfclip.utils.io import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
SPEEDUP_TARGET = {"cpu": 15.0, "cuda": 100.0}


def natural_crops(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(batch, 3, size, size) float32 in [0, 1] on 8-bit steps: random crops of scikit-image's photos."""
    generator = torch.Generator().manual_seed(seed)
    photos = [
        torch.from_numpy(getattr(skdata, name)()).permute(2, 0, 1).float() / 255 for name in SOURCE_PHOTOS
    ]
    images = []
    for index in range(batch):
        photo = photos[index % len(photos)]
        height, width = photo.shape[-2:]
        side = int(torch.randint(min(height, width) // 3, min(height, width) + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
        crop = photo[None, :, top : top + side, left : left + side]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images.append(crop[0])
    return (torch.stack(images).clamp(0, 1) * 255).round() / 255


def reference_loop(images: torch.Tensor, grid: int, input_scale: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image richest patch (scikit-image GLCM per patch) and per-patch SRM conv, as released."""
    weight = srm_conv_weight(torch.float32)
    scale = INPUT_SCALES[input_scale]
    indices, residuals = [], []
    for image in images:
        rgb = image.detach().cpu().numpy().astype(np.float32)
        red, green, blue = (np.float32(255.0 * weight) for weight in LUMA_WEIGHTS)
        gray = np.clip(np.rint((red * rgb[0] + green * rgb[1]) + blue * rgb[2]), 0, 255).astype(np.uint8)
        patch_h, patch_w = gray.shape[0] // grid, gray.shape[1] // grid
        scores = []
        for row in range(grid):
            for col in range(grid):
                tile = gray[row * patch_h : (row + 1) * patch_h, col * patch_w : (col + 1) * patch_w]
                glcm = graycomatrix(tile, [1], [0], levels=256, symmetric=True, normed=True)
                scores.append(graycoprops(glcm, "homogeneity")[0, 0])
        best = int(np.argmin(scores))
        row, col = divmod(best, grid)
        patch = torch.from_numpy(
            rgb[:, row * patch_h : (row + 1) * patch_h, col * patch_w : (col + 1) * patch_w]
        )
        noise = F.hardtanh(F.conv2d(patch[None] * scale, weight, padding=2), -SRM_CLIP, SRM_CLIP)
        indices.append(best)
        residuals.append(noise.to(images.device))
    return torch.tensor(indices, device=images.device), torch.cat(residuals)


def batched_ops(images: torch.Tensor, grid: int, input_scale: str) -> tuple[torch.Tensor, torch.Tensor]:
    patches, indices = richest_patch(images, grid)
    return indices, srm_residual(patches, input_scale)


def time_interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Wall-clock seconds of each call, ``repeats`` rounds after one warm-up round.

    The calls alternate within each round, so a busy machine slows all of them alike.
    """

    def synced(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for fn in calls.values():
        synced(fn)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in tqdm(range(repeats), desc="repeats", leave=False):
        for name, fn in calls.items():
            seconds[name].append(synced(fn))
    return seconds


def machine_description(device: torch.device) -> dict[str, object]:
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    description: dict[str, object] = {
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scikit_image": skimage.__version__,
        "numpy": np.__version__,
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def render_markdown(result: dict) -> str:
    config, machine, rows = result["config"], result["machine"], result["timings"]
    lines = [
        "# Benchmark: richest patch + SRM residual",
        "",
        f"{config['batch']} images at {config['size']} px, {config['grid']}x{config['grid']} grid, "
        f"SRM input scale `{config['input_scale']}`, device `{config['device']}`, "
        f"median of {config['repeats']} interleaved repeats{' (quick run)' if config['quick'] else ''}. "
        "Images: random crops of scikit-image's sample photos.",
        "",
        "| implementation | median (ms) | min (ms) | per image (ms) | speed-up (median) | speed-up (min) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['median_ms']:.2f} | {row['min_ms']:.2f} | {row['per_image_ms']:.3f} "
            f"| {row['speedup']:.1f}x | {row['speedup_min']:.1f}x |"
        )
    check = result["check"]
    lines += [
        "",
        f"Selected patch agrees on {check['agreeing_images']}/{config['batch']} images; "
        f"largest residual difference {check['max_abs_residual_diff']:.2e}. "
        f"Target {result['target_speedup']:.0f}x: {'met' if result['target_met'] else 'not met'}.",
        "",
        "Reference: per image, NumPy luma → scikit-image `graycomatrix` + `graycoprops` on each patch → "
        "`argmin` → SRM `conv2d` + Hardtanh on the chosen patch (as the released MFCLIP code). "
        "Ours: `mfclip.ops.richest_patch` + `mfclip.ops.srm_residual` on the whole batch.",
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--grid", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--input-scale", default="unit", choices=sorted(INPUT_SCALES))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="16 images at 96 px, 3 repeats")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeats = 16, 96, 3

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images = natural_crops(args.batch, args.size).to(device)

    ref_indices, ref_residual = reference_loop(images, args.grid, args.input_scale)
    our_indices, our_residual = batched_ops(images, args.grid, args.input_scale)
    agreeing = int((ref_indices == our_indices).sum())
    max_diff = float((ref_residual - our_residual).abs().max())

    reference_name, ours_name = "reference (per image, scikit-image)", "mfclip.ops (batched torch)"
    seconds = time_interleaved(
        {
            reference_name: lambda: reference_loop(images, args.grid, args.input_scale),
            ours_name: lambda: batched_ops(images, args.grid, args.input_scale),
        },
        args.repeats,
        device,
    )
    timings = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"{name}: median {timings[name] * 1e3:.2f} ms, min {min(values) * 1e3:.2f} ms", flush=True)

    reference_seconds = timings[reference_name]
    rows = [
        {
            "name": name,
            "median_ms": median * 1e3,
            "min_ms": min(seconds[name]) * 1e3,
            "per_image_ms": median * 1e3 / args.batch,
            "speedup": reference_seconds / median,
            "speedup_min": min(seconds[reference_name]) / min(seconds[name]),
        }
        for name, median in timings.items()
    ]
    speedup = rows[-1]["speedup"]
    target = SPEEDUP_TARGET.get(device.type, SPEEDUP_TARGET["cpu"])
    result = {
        "benchmark": "ops",
        "config": {
            "device": str(device),
            "batch": args.batch,
            "size": args.size,
            "grid": args.grid,
            "repeats": args.repeats,
            "input_scale": args.input_scale,
            "quick": args.quick,
        },
        "machine": machine_description(device),
        "timings": rows,
        "speedup": speedup,
        "target_speedup": target,
        "target_met": speedup >= target,
        "check": {"agreeing_images": agreeing, "max_abs_residual_diff": max_diff},
    }
    markdown = render_markdown(result)
    print(markdown)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out_dir / "ops.md", markdown)
    atomic_write_json(args.out_dir / "ops.json", result)

    if agreeing != args.batch or max_diff > 1e-4 * INPUT_SCALES[args.input_scale]:
        print(
            f"MISMATCH: {args.batch - agreeing} images select a different patch; "
            f"residual difference {max_diff:.2e}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
