"""Inference overhead of MFCLIP over its bare open_clip image tower, side by side in one run.

Times, on the same random batch (batch 8 by default, random initialisation, ``torch.inference_mode``):

  1. the bare open_clip ``VisionTransformer`` of the preset's ``vision.clip_vit`` config on images that
     are already CLIP-normalised (the reference: what a plain CLIP image classifier costs);
  2. ``model.inference_module()`` — MFCLIP's whole inference path on [0, 1] images: normalisation,
     the image tower, richest-patch selection, SRM, the noise branch, fusion and the head;
  3. the noise branch alone (richest patch + SRM + noise encoder), to show where the overhead goes.

Repeats are interleaved (reference, ours, noise branch, ...) so drift hits every variant alike; the
table reports the median. Target: MFCLIP ≤ 15 % slower per image than the bare ViT-B/16 tower.

    python benchmarks/bench_inference_overhead.py                  # mfclip-vit-b16, 224 px, batch 8
    python benchmarks/bench_inference_overhead.py --device cuda
    python benchmarks/bench_inference_overhead.py --quick          # mfclip-tiny, few repeats (smoke run)

Writes docs/benchmarks/inference_overhead.md and inference_overhead.json.
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
from typing import Any

import torch
from tqdm import tqdm

from mfclip.models.registry import create_model
from mfclip.models.vision import build_clip_vit
from mfclip.utils.io import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_tower(model: Any) -> torch.nn.Module:
    """The bare open_clip image tower of the model's clip_vit config (open_clip's own for a named arch).

    It has the same activation as the model's tower (``quick_gelu`` as in OpenAI's weights), so the
    comparison measures what MFCLIP adds, not a different activation function.
    """
    config = model.config
    clip_vit = config.vision.clip_vit
    if clip_vit.arch and all(
        getattr(clip_vit, f) is None for f in ("width", "layers", "heads", "patch_size", "mlp_ratio")
    ):
        import open_clip

        arch = dict(open_clip.get_model_config(clip_vit.arch))
        arch["quick_gelu"] = clip_vit.resolved()["quick_gelu"]
        if arch["vision_cfg"].get("image_size", 224) == config.image_size:
            return open_clip.model.CLIP(**arch).visual
    return build_clip_vit(clip_vit, config.image_size, config.embed_dim)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    model = create_model(args.model).eval().to(device=device, dtype=dtype)
    if model.vision.clip_vit is None:
        raise SystemExit(f"{args.model} has no clip_vit image branch to compare with")
    tower = reference_tower(model).eval().to(device=device, dtype=dtype)
    inference = model.inference_module()
    size = model.image_size
    images = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    images = images.to(device=device, dtype=dtype)
    vision = model.vision
    with torch.inference_mode():
        normalised = vision.global_input(images).contiguous()

        def noise_branch() -> torch.Tensor:
            residual, _ = vision.noise_input(images)
            return vision.noise(residual.to(images.dtype))

        variants: dict[str, Callable[[], Any]] = {
            "bare open_clip image tower": lambda: tower(normalised),
            "MFCLIP inference_module": lambda: inference(images),
        }
        if vision.noise is not None:
            variants["noise branch alone"] = noise_branch
            variants["richest patch + SRM alone"] = lambda: vision.noise_input(images)
        for function in variants.values():
            for _ in range(args.warmup):
                function()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in tqdm(range(args.repeats), desc="repeats", leave=False):
            for name, function in variants.items():
                times[name].append(time_call(function, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians["bare open_clip image tower"]
    rows = []
    for name, seconds in medians.items():
        rows.append(
            {
                "variant": name,
                "ms_per_batch": seconds * 1e3,
                "ms_per_image": seconds * 1e3 / args.batch,
                "images_per_s": args.batch / seconds,
                "relative_to_tower_pct": 100.0 * seconds / reference,
            }
        )
    overhead = 100.0 * (medians["MFCLIP inference_module"] / reference - 1.0)
    params = {
        "bare_tower": sum(p.numel() for p in tower.parameters()),
        "mfclip_inference": sum(p.numel() for p in inference.parameters()),
    }
    return {
        "benchmark": "inference_overhead",
        "quick": args.quick,
        "config": {
            "model": args.model,
            "image_size": size,
            "batch": args.batch,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "dtype": args.dtype,
        },
        "environment": {
            "device": device.type,
            "device_name": (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine()
            ),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "parameters": params,
        "rows": rows,
        "overhead_pct": overhead,
        "target_pct": 15.0,
        "meets_target": overhead <= 15.0,
    }


def to_markdown(result: dict[str, Any]) -> str:
    config, env = result["config"], result["environment"]
    lines = [
        "# Inference overhead: MFCLIP vs its bare image tower",
        "",
        f"Model `{config['model']}` ({config['image_size']} px), batch {config['batch']}, {config['dtype']}, "
        f"random initialisation, `torch.inference_mode`, median of {config['repeats']} interleaved repeats "
        f"after {config['warmup']} warm-up calls{' (quick run)' if result['quick'] else ''}.",
        f"Device: {env['device']} ({env['device_name'] or 'unknown'}), torch {env['torch']}, "
        f"{env['torch_threads']} threads.",
        "",
        "The reference is the bare open_clip `VisionTransformer` on pre-normalised input; MFCLIP's "
        "`inference_module()` takes [0, 1] images and adds normalisation, richest-patch selection, SRM, "
        "the noise branch, fusion and the head. The text tower never runs at inference.",
        "",
        "| variant | ms / batch | ms / image | images / s | % of tower time |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['variant']} | {row['ms_per_batch']:.2f} | {row['ms_per_image']:.3f} | "
            f"{row['images_per_s']:.1f} | {row['relative_to_tower_pct']:.1f} |"
        )
    params = result["parameters"]
    verdict = "meets" if result["meets_target"] else "misses"
    lines += [
        "",
        f"**Overhead per image: {result['overhead_pct']:+.1f} %** (target ≤ {result['target_pct']:.0f} %: "
        f"{verdict} it). Parameters: bare tower {params['bare_tower'] / 1e6:.1f} M, MFCLIP inference path "
        f"{params['mfclip_inference'] / 1e6:.1f} M.",
        "",
        "Regenerate with `python benchmarks/bench_inference_overhead.py [--device cuda]`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mfclip-vit-b16", help="a preset with a clip_vit image branch")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="mfclip-tiny, 5 repeats, 2 warm-up calls")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    if args.quick:
        args.model = "mfclip-tiny" if args.model == "mfclip-vit-b16" else args.model
        args.repeats, args.warmup = 5, 2
    result = run(args)
    markdown = to_markdown(result)
    print(markdown)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out_dir / "inference_overhead.md", markdown)
    atomic_write_json(args.out_dir / "inference_overhead.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
