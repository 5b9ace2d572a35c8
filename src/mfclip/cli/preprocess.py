"""``mfclip preprocess``: images and videos → face crops + manifest (see docs/preprocessing.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("preprocess", no_args_is_help=True)(preprocess_command)


def preprocess_command(
    paths: list[Path] = typer.Argument(
        None, help="Image / video files or folders (searched recursively).", show_default=False
    ),
    inputs: list[Path] = typer.Option(
        None, "--input", "-i", help="An input file or folder (repeatable; same as the positional paths)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for crops, manifest.csv, skipped.csv."),
    manifest: Path = typer.Option(
        None, "--manifest", help="Preprocess the rows of this manifest (CSV/Parquet), keeping their labels."
    ),
    root: Path = typer.Option(
        None, "--root", help="Folder that relative manifest paths resolve against (default: the manifest's)."
    ),
    drop_invalid: bool = typer.Option(
        False,
        "--drop-invalid",
        help="Skip --manifest rows with problems (bad path, label, split) instead of refusing.",
    ),
    detector: str = typer.Option(
        "mtcnn", "--detector", help="Face detector: mtcnn, haar or none (centre crop)."
    ),
    margin: float = typer.Option(
        None,
        "--margin",
        help="Box crops: square side = longer box side x (1 + margin). Default 0.3; 0 with --detector none.",
    ),
    scale: float = typer.Option(1.3, "--scale", help="Aligned crops: zoom-out of the face template."),
    size: int = typer.Option(256, "--size", help="Output crop size in pixels (square)."),
    faces: str = typer.Option("largest", "--faces", help="Keep the largest face per image/frame, or all."),
    frames: int = typer.Option(32, "--frames", help="Frames sampled uniformly from each video."),
    align: str = typer.Option(
        "none", "--align", help="none (box crop) or deepfakebench (5-point ArcFace alignment; mtcnn only)."
    ),
    min_score: float = typer.Option(0.0, "--min-score", help="Drop detections scoring below this."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=1, help="Worker processes (default: all CPU cores)."
    ),
    device: str = typer.Option("cpu", "--device", help="Device for the mtcnn detector: cpu, cuda, auto, ..."),
    file_format: str = typer.Option("png", "--format", help="Crop file format: png or jpg."),
    quality: int = typer.Option(95, "--quality", help="JPEG quality for --format jpg."),
    label: str = typer.Option(None, "--label", help="Label of every input: real/fake or 0/1."),
    split: str = typer.Option(None, "--split", help="Split of every input (train, val, test, ...)."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset name of every input."),
    forgery_type: str = typer.Option(None, "--forgery-type", help="Forgery type of every input."),
    family: str = typer.Option(None, "--family", help="Generator family of every input."),
    generator: str = typer.Option(None, "--generator", help="Generator name of every input."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Detect, crop (or align) and save the faces of images and videos, and write a manifest.

    Reruns resume: finished inputs are skipped. Inputs that give no face are listed in DIR/skipped.csv.
    """
    from mfclip.face.pipeline import PreprocessConfig, preprocess
    from mfclip.utils.config import ConfigError

    values = {
        "label": label,
        "split": split,
        "dataset": dataset,
        "forgery_type": forgery_type,
        "family": family,
        "generator": generator,
    }
    config = PreprocessConfig.from_dict(
        {
            "detector": detector,
            "margin": margin,
            "scale": scale,
            "size": size,
            "faces": faces,
            "frames": frames,
            "align": align,
            "min_score": min_score,
            "workers": workers,
            "device": device,
            "format": file_format,
            "jpeg_quality": quality,
            "labels": {key: value for key, value in values.items() if value is not None},
            "progress": progress,
        },
        source="mfclip preprocess",
    )
    all_inputs = [*(paths or []), *(inputs or [])]
    if manifest is None and not all_inputs:
        raise ConfigError("mfclip preprocess: give input files or folders, or --manifest")
    result = preprocess(all_inputs, out, config, manifest=manifest, root=root, drop_invalid=drop_invalid)
    if result.dropped_rows:
        typer.echo(f"dropped {result.dropped_rows} rows of {manifest} with problems (--drop-invalid)")
    folders = f"; {result.folders} folders skipped (empty or unreadable)" if result.folders else ""
    typer.echo(
        f"{result.sources} input files: {result.processed} processed, {result.resumed} already done; "
        f"{result.no_face} with no face, {result.unreadable} unreadable, {result.failed} failed{folders}; "
        f"{result.written} crops written"
    )
    typer.echo(f"manifest: {result.manifest_path} ({result.faces} rows)")
    if result.skipped:
        typer.echo(f"skipped:  {result.skipped_path}")
