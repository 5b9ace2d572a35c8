"""``mfclip synth``: generate the deterministic SYNTHETIC face-forgery benchmark."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(name="synth")(synth)


def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (created; resumes a partial run)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed and sizes give byte-identical files."),
    size: int = typer.Option(2000, "--size", help="Number of images (24 to 1000000)."),
    image_size: int = typer.Option(
        224, "--image-size", help="Side in pixels, a multiple of 8 (64 for quick CPU demos)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes (default: available CPUs)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a benchmark made with other settings in --out."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate the SYNTHETIC benchmark: images, manifest.csv, protocol.yaml, README.md, synth.json.

    Cartoon faces through a simulated camera ("real"), eight simulated generators ("fake"): no real person.
    """
    from mfclip.data.synth import generate_benchmark

    result = generate_benchmark(
        out,
        seed=seed,
        size=size,
        image_size=image_size,
        workers=workers,
        progress=not quiet,
        overwrite=overwrite,
    )
    rate = result.generated / result.seconds if result.seconds > 0 else 0.0
    typer.echo(
        f"SYNTHETIC benchmark: {result.num_images} images in {result.out_dir} "
        f"({result.generated} generated, {result.skipped} already present; {rate:.1f} images/s)"
    )
    typer.echo(f"manifest: {result.manifest_path}")
    typer.echo(f"protocol: {result.protocol_path}")
