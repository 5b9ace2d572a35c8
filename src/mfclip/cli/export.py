"""``mfclip export``: the inference path of a checkpoint as ONNX or TorchScript, verified after export."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("export", no_args_is_help=True)(export_command)


def export_command(
    checkpoint: str = typer.Option(
        ...,
        "--checkpoint",
        "-c",
        help="Checkpoint directory, or hf-hub:owner/name[@revision] from the Hugging Face Hub.",
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Output file (default: <checkpoint name>.onnx or .pt in the current folder).",
    ),
    opset: int = typer.Option(None, "--opset", min=1, help="ONNX opset (default 18)."),
    exporter: str = typer.Option("auto", "--exporter", help="ONNX: auto, dynamo or torchscript (legacy)."),
    atol: float = typer.Option(1e-4, "--atol", min=0.0, help="Largest accepted difference from PyTorch."),
) -> None:
    """Export the inference path to ONNX or TorchScript, verified against PyTorch.

    The graph maps images (B, 3, S, S) float in [0, 1] to P(fake) (B,), with a dynamic batch dimension. The
    exported file is run on random images at several batch sizes and must match PyTorch within --atol.
    """
    from mfclip.inference.detector import Detector
    from mfclip.inference.export import EXPORT_FORMATS, SUFFIXES, export_onnx, export_torchscript

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if opset is not None and fmt != "onnx":
        raise ValueError("--opset applies to --format onnx only")
    detector = Detector.from_pretrained(checkpoint, device="cpu")
    typer.echo(f"mfclip export: {detector.summary()}", err=True)
    if out is None:
        from mfclip.models.hub import is_hub_id, parse_hub_id

        name = detector.checkpoint.stem if detector.checkpoint is not None else "model"
        if is_hub_id(checkpoint):  # not the commit-named snapshot folder of the Hub cache
            name = parse_hub_id(checkpoint).repo_id.split("/")[1]
        out = Path(f"{name}{SUFFIXES[fmt]}")
    if fmt == "onnx":
        result = export_onnx(detector.model, out, opset=opset, exporter=exporter, atol=atol)
    else:
        result = export_torchscript(detector.model, out, atol=atol)
    how = (
        f"{result.exporter} exporter, opset {result.opset}" if result.format == "onnx" else "torch.jit.trace"
    )
    sizes = ", ".join(str(b) for b in result.checked_batch_sizes)
    typer.echo(
        f"wrote {result.path} ({how}); matches PyTorch within {result.max_abs_diff:.1e} "
        f"at batch sizes {sizes}"
    )
    for note in result.notes:
        typer.echo(f"  note: {note}", err=True)
