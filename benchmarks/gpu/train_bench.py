"""Single-GPU training benchmark: MFCLIP ViT-B/16 vs a plain CLIP ViT-B/16 fine-tune, side by side.

For each model (``mfclip-vit-b16``, and the reference ``clip-finetune-b16``: the same CLIP image tower with
a linear head and cross-entropy only) on random 224 px images at batch 24 with bf16 autocast:

- training images/s (forward with the prompts, every loss, backward, Adam step; median of timed windows),
- peak GPU memory of a training step,
- FLOPs of one training step (``torch.utils.flop_counter.FlopCounterMode``) and MFU against the device's
  dense bf16 peak (H100/H200: 989 TFLOP/s),
- inference images/s of ``model.inference_module()`` (what the server and exports run).

Then a short end-to-end run of the training engine (``mfclip.engine.train.train``, Lightning, bf16-mixed,
DataLoader workers decoding JPEGs) on the synthetic benchmark, timed per batch after a warm-up.

    python benchmarks/gpu/train_bench.py                      # on the GPU; writes $OUT or docs/benchmarks
    python benchmarks/gpu/train_bench.py --cpu-smoke          # tiny models, 2 steps, CPU (checks the script)

Writes ``train_gpu.json`` and ``train_gpu.md`` into ``--out-dir``. Works without network: no weights are
downloaded (random initialisation has the same cost as pretrained weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
# Dense bf16 tensor-core peak per device family (no sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12}


def peak_flops(device_name: str) -> float | None:
    for family, flops in PEAK_BF16_FLOPS.items():
        if family in device_name.upper().replace("NVIDIA ", ""):
            return flops
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prompt_batch(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels and the real prompt tokens of a half-real, half-fake batch (fakes from several generators)."""
    from mfclip.prompts import build_prompt_table

    generators = ["SDXL", "DiffFace", "Midjourney", "Imagic"]
    label_list = [i % 2 for i in range(batch)]
    table = build_prompt_table(
        label_list, generator=[generators[i % 4] if label else "" for i, label in enumerate(label_list)]
    )
    tokens, mask = table.rows(list(range(batch)))
    labels = torch.tensor(label_list)
    return labels.to(device), tokens.to(device), mask.to(device)


def train_step(model: Any, optimizer: Any, images, labels, tokens, mask, dtype) -> None:
    """One optimizer step as the engine's training_step does it (autocast like Lightning's bf16-mixed)."""
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
        if model.uses_text():
            output = model(images, tokens, mask)
        else:
            output = model(images)
        loss = model.compute_loss(output, labels)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def bench_model(
    name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from mfclip.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(name).to(device).train()
    size = model.image_size
    batch = args.batch
    images = torch.rand(batch, 3, size, size, device=device)
    labels, tokens, mask = prompt_batch(batch, device)
    groups = model.parameter_groups()
    param_groups = [
        {"params": params, "lr": lr}
        for params, lr in ((groups["pretrained"], 1e-5), (groups["new"], 1e-4))
        if params
    ]
    optimizer = torch.optim.Adam(param_groups, weight_decay=1e-3)
    params = sum(p.numel() for p in model.parameters())

    with FlopCounterMode(display=False) as counter:
        train_step(model, optimizer, images, labels, tokens, mask, dtype)
    flops_per_step = counter.get_total_flops()

    for _ in range(args.warmup):
        train_step(model, optimizer, images, labels, tokens, mask, dtype)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    windows = []
    for _ in range(args.windows):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(model, optimizer, images, labels, tokens, mask, dtype)
        synchronize(device)
        windows.append((time.perf_counter() - start) / args.steps)
    step_s = statistics.median(windows)
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    optimizer.zero_grad(set_to_none=True)
    del optimizer
    inference = model.inference_module().eval()
    infer_images = torch.rand(args.infer_batch, 3, size, size, device=device)
    infer_windows = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        for _ in range(args.warmup):
            inference(infer_images)
        for _ in range(args.windows):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                inference(infer_images)
            synchronize(device)
            infer_windows.append((time.perf_counter() - start) / args.steps)
    infer_s = statistics.median(infer_windows)

    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    achieved = flops_per_step / step_s
    result = {
        "model": name,
        "image_size": size,
        "batch": batch,
        "parameters": params,
        "train_step_ms": step_s * 1e3,
        "train_images_per_s": batch / step_s,
        "train_step_ms_windows": [w * 1e3 for w in windows],
        "peak_memory_gib": peak_memory / 2**30 if peak_memory is not None else None,
        "flops_per_step": flops_per_step,
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / peak if peak else None,
        "inference_batch": args.infer_batch,
        "inference_images_per_s": args.infer_batch / infer_s,
    }
    del model, inference
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def bench_engine(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """A short real run of ``train()`` (Lightning, data loading, checkpoints, export) on synthetic data."""
    import lightning as L

    from mfclip.data.synth import generate_benchmark
    from mfclip.engine.config import load_train_config
    from mfclip.engine.train import train

    class BatchTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, trainer: L.Trainer, *rest: Any) -> None:
            synchronize(device)
            self.times.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="mfclip-bench-") as tmp:
        start = time.perf_counter()
        synth = generate_benchmark(
            Path(tmp) / "synth",
            seed=0,
            size=args.engine_images,
            image_size=args.engine_image_size,
            workers=os.cpu_count(),
            progress=False,
        )
        generated_s = time.perf_counter() - start
        overrides = [
            f"model.name={args.engine_model}",
            f"data.protocol={synth.protocol_path}",
            f"data.batch_size={args.batch}",
            f"data.num_workers={args.workers}",
            f"trainer.precision={args.engine_precision}",
            f"trainer.accelerator={'cpu' if device.type == 'cpu' else 'gpu'}",
            "trainer.devices=1",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={args.engine_steps}",
            "trainer.limit_val_batches=2",
            "trainer.num_sanity_val_steps=0",
            "trainer.log_every_n_steps=10",
            "trainer.progress_bar=false",
            "logging.tensorboard=false",
            f"output.run_dir={Path(tmp) / 'run'}",
        ]
        config = load_train_config("default", overrides)
        timer = BatchTimer()
        start = time.perf_counter()
        result = train(config, callbacks=[timer])
        total_s = time.perf_counter() - start
        skip = min(args.warmup, max(len(timer.times) - 2, 0))
        steady = timer.times[skip:]
        per_step = (steady[-1] - steady[0]) / (len(steady) - 1) if len(steady) > 1 else float("nan")
        return {
            "model": args.engine_model,
            "precision": args.engine_precision,
            "batch": args.batch,
            "workers": args.workers,
            "synthetic_images": synth.num_images,
            "synthetic_generation_s": generated_s,
            "steps": result.global_step,
            "status": result.status,
            "best_val_auc": result.best_val_auc,
            "train_call_s": total_s,
            "steady_step_ms": per_step * 1e3,
            "steady_images_per_s": args.batch / per_step,
        }


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# Training throughput on one GPU",
        "",
        f"Device: {env['device']}; torch {env['torch']}; batch {report['batch']}, {report['dtype']} "
        "autocast, random initialisation, random images (model rows), synthetic benchmark JPEGs (engine).",
        "",
        "| model | train img/s | step ms | peak mem GiB | TFLOP/step | achieved TFLOP/s | MFU "
        "| infer img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["models"]:
        mem = f"{row['peak_memory_gib']:.1f}" if row["peak_memory_gib"] is not None else "n/a"
        mfu = f"{100 * row['mfu']:.1f} %" if row["mfu"] is not None else "n/a"
        lines.append(
            f"| {row['model']} | {row['train_images_per_s']:.0f} | {row['train_step_ms']:.1f} | {mem} | "
            f"{row['flops_per_step'] / 1e12:.2f} | {row['achieved_tflops']:.1f} | {mfu} | "
            f"{row['inference_images_per_s']:.0f} |"
        )
    if len(report["models"]) == 2:
        ours, ref = report["models"]
        lines += [
            "",
            f"MFCLIP trains at {ours['train_images_per_s'] / ref['train_images_per_s']:.2f}× the images/s of "
            f"the plain CLIP fine-tune (it also runs the text tower on four prompts per image, the noise "
            f"branch and two extra losses); it infers at "
            f"{ours['inference_images_per_s'] / ref['inference_images_per_s']:.2f}× its speed.",
        ]
    engine = report.get("engine")
    if engine:
        lines += [
            "",
            f"Engine (`mfclip train`, Lightning {engine['precision']}, {engine['workers']} loader "
            f"workers): {engine['steady_images_per_s']:.0f} images/s in steady state "
            f"({engine['steady_step_ms']:.1f} ms per step over {engine['steps']} steps, "
            f"status {engine['status']}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mfclip-vit-b16", "clip-finetune-b16"])
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows (the median is reported)")
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--engine-steps", type=int, default=40, help="0 skips the engine run")
    parser.add_argument("--engine-model", default="mfclip-vit-b16")
    parser.add_argument("--engine-images", type=int, default=2400, help="synthetic benchmark size")
    parser.add_argument("--engine-image-size", type=int, default=224)
    parser.add_argument("--engine-precision", default="bf16-mixed")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the engine run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: $OUT, else docs/benchmarks")
    parser.add_argument(
        "--cpu-smoke",
        "--quick",
        action="store_true",
        help="tiny models on the CPU, 2 steps: checks the script end to end, figures mean nothing",
    )
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.device, args.dtype, args.models = "cpu", "fp32", ["mfclip-tiny", "clip-finetune-tiny"]
        args.batch, args.warmup, args.steps, args.windows, args.infer_batch = 4, 1, 2, 1, 8
        args.engine_steps, args.engine_model, args.engine_images = 2, "mfclip-tiny", 48
        args.engine_image_size, args.engine_precision, args.workers = 64, "32-true", 0
    out_dir = args.out_dir or Path(os.environ.get("OUT") or REPO_ROOT / "docs" / "benchmarks")
    if args.cpu_smoke and args.out_dir is None and not os.environ.get("OUT"):
        out_dir = Path(tempfile.mkdtemp(prefix="mfclip-train-bench-"))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device; run with --cpu-smoke to check the script on the CPU")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]

    report: dict[str, Any] = {
        "benchmark": "train_gpu",
        "batch": args.batch,
        "dtype": args.dtype,
        "smoke": args.cpu_smoke,
        "environment": {
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "peak_bf16_flops": peak_flops(torch.cuda.get_device_name(device))
            if device.type == "cuda"
            else None,
        },
        "models": [],
    }
    for name in args.models:
        row = bench_model(name, args, device, dtype)
        report["models"].append(row)
        print(json.dumps(row, indent=2), flush=True)
    if args.engine_steps > 0:
        report["engine"] = bench_engine(args, device)
        print(json.dumps(report["engine"], indent=2), flush=True)

    text = markdown(report)
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    from mfclip.utils.io import atomic_write_json, atomic_write_text

    atomic_write_json(out_dir / "train_gpu.json", report)
    atomic_write_text(out_dir / "train_gpu.md", text)
    print(f"wrote {out_dir / 'train_gpu.json'} and {out_dir / 'train_gpu.md'}")


if __name__ == "__main__":
    main()
