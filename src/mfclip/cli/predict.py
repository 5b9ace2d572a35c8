"""``mfclip predict``: score images, folders and videos with a checkpoint into a CSV or JSONL table."""

from __future__ import annotations

from pathlib import Path

import typer

from mfclip.cli import FACE_DETECT_HELP

#: Exit status when every input failed (documented in docs/inference.md).
NOTHING_SCORED = 1
#: More CPU threads, devices or nodes than any machine has: a mistyped number, refused before any work.
MOST_PARALLEL = 1024


def register(app: typer.Typer) -> None:
    app.command("predict", no_args_is_help=True)(predict_command)


def predict_command(
    inputs: list[Path] = typer.Argument(
        ..., exists=True, help="Image or video files, or folders (searched recursively)."
    ),
    checkpoint: str = typer.Option(
        ...,
        "--checkpoint",
        "-c",
        help="Checkpoint directory, or hf-hub:owner/name[@revision] from the Hugging Face Hub.",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output .csv or .jsonl, written as it goes (default: CSV on stdout)."
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", min=0.0, max=1.0, help="P(fake) at or above which label is 'fake'."
    ),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Images per forward pass."),
    frames: int = typer.Option(16, "--frames", min=1, help="Frames sampled uniformly from each video."),
    face_detect: str = typer.Option(
        "auto",
        "--face-detect",
        help=FACE_DETECT_HELP,
    ),
    device: str = typer.Option("auto", "--device", help="auto (GPU when present), cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option(None, "--dtype", help="float32 (default), bfloat16 or float16."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=0, help="Decoding worker processes (default: by job size)."
    ),
    threads: int = typer.Option(
        None, "--threads", min=1, max=MOST_PARALLEL, help="CPU threads for the model (default: all cores)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Skip paths already in --out and append the rest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    devices: int = typer.Option(
        1,
        "--devices",
        min=-1,
        max=MOST_PARALLEL,
        help="Devices per node (-1: all); >1 shards the job through Lightning.",
    ),
    num_nodes: int = typer.Option(
        1, "--num-nodes", min=1, max=MOST_PARALLEL, help="Nodes for a multi-node job (Lightning DDP)."
    ),
    accelerator: str = typer.Option("auto", "--accelerator", help="Lightning accelerator for --devices > 1."),
    max_pixels: int = typer.Option(
        64_000_000, "--max-pixels", min=1, help="Refuse images above this many pixels."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score every image and video under INPUTS; one row per file (path, p_fake, label, ...).

    Videos get the mean P(fake) over sampled frames (p_fake), the maximum (p_fake_max) and the frame count.
    A file that cannot be read gets a row with its error; the run goes on. Exit status: 0 when files were
    scored, 1 when every input failed, 2 for a bad option, input path, checkpoint or output.
    """
    import os
    import sys

    import torch

    from mfclip.inference.detector import Detector
    from mfclip.inference.predict import PredictOptions, predict_files

    options = PredictOptions(
        threshold=threshold,
        batch_size=batch_size,
        frames=frames,
        num_workers=workers,
        resume=resume,
        overwrite=overwrite,
        devices=devices,
        num_nodes=num_nodes,
        accelerator=accelerator,
        progress=progress,
    )
    distributed = options.distributed
    detector = Detector.from_pretrained(
        checkpoint,
        device="cpu" if distributed else device,
        dtype=dtype,
        face_detector=face_detect,
        max_pixels=max_pixels,
        batch_size=batch_size,
    )
    if detector.device.type == "cpu" and not distributed:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(threads or cores)
    rank = int(os.environ.get("LOCAL_RANK", "0")) + int(os.environ.get("NODE_RANK", "0"))
    if rank == 0:
        print(f"mfclip predict: {detector.summary()}", file=sys.stderr)
    summary = predict_files(detector, inputs, out, options)
    if rank == 0:
        if summary.inputs == 0:
            searched = ", ".join(str(path) for path in inputs)
            print(f"mfclip predict: warning: no images or videos found under {searched}", file=sys.stderr)
        where = f" to {summary.out}" if summary.out else ""
        skipped = f", {summary.skipped} already done" if summary.skipped else ""
        print(
            f"mfclip predict: {summary.inputs} inputs{skipped}; wrote {summary.written} rows{where}, "
            f"{summary.errors} with errors",
            file=sys.stderr,
        )
        for example in summary.error_examples:
            print(f"  error: {example}", file=sys.stderr)
    if summary.written and summary.errors == summary.written and not summary.skipped:
        if rank == 0:
            print(
                f"mfclip predict: error: none of the {summary.written} inputs could be scored",
                file=sys.stderr,
            )
        raise typer.Exit(NOTHING_SCORED)
