"""``mfclip demo``: the offline end-to-end demo on a SYNTHETIC benchmark (a few minutes on a CPU)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    out: Path = typer.Option(
        Path("demo_output"), "--out", "-o", help="Output folder (resumes if it exists)."
    ),
    size: int = typer.Option(
        None, "--size", help="SYNTHETIC images to generate (default 3000; 120 with --fast)."
    ),
    image_size: int = typer.Option(64, "--image-size", help="Side of the generated images in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the benchmark and of training."),
    fast: bool = typer.Option(False, "--fast", help="A smoke run of a few seconds (meaningless numbers)."),
    baseline: str = typer.Option("cnn-tiny", "--baseline", help="Model preset trained next to mfclip-tiny."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=1, help="Worker processes for data generation and loading."
    ),
) -> None:
    """Generate SYNTHETIC data, train mfclip-tiny and a baseline, evaluate seen/unseen generators, report."""
    from mfclip.engine.demo import run_demo

    run_demo(
        out,
        size=size,
        image_size=image_size,
        seed=seed,
        fast=fast,
        baseline=baseline,
        workers=workers,
        echo=typer.echo,
    )
