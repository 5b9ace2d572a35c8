"""``mfclip explain``: a panel showing why a detector scored an image as it did."""

from __future__ import annotations

from pathlib import Path

import typer

from mfclip.cli import FACE_DETECT_HELP


def register(app: typer.Typer) -> None:
    app.command("explain", no_args_is_help=True)(explain_command)


def explain_command(
    image: Path = typer.Argument(..., help="The image to explain."),
    checkpoint: str = typer.Option(
        ...,
        "--checkpoint",
        "-c",
        help="Checkpoint directory, or hf-hub:owner/name[@revision] from the Hugging Face Hub.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output panel: .png, .jpg/.jpeg, .pdf or .svg (by its suffix)."
    ),
    face_detect: str = typer.Option(
        "auto",
        "--face-detect",
        help=FACE_DETECT_HELP,
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    threshold: float = typer.Option(
        0.5, "--threshold", min=0.0, max=1.0, help="P(fake) at or above which the label is 'fake'."
    ),
) -> None:
    """Write a panel explaining why the detector scored IMAGE as it did (PNG, JPEG, PDF or SVG by suffix).

    The panel shows Grad-CAM of the image branch, the richest patch and its SRM residual, P(fake), and
    (when the checkpoint has its text tower) the similarity of the image to each prompt.
    """
    from mfclip.inference.detector import Detector
    from mfclip.inference.explain import panel_format

    panel_format(out)  # refuse an unsupported suffix before loading the model
    detector = Detector.from_pretrained(checkpoint, device=device, face_detector=face_detect)
    explanation = detector.explain(image, threshold=threshold)
    explanation.save(out)
    typer.echo(f"{image}: P(fake) = {explanation.p_fake:.4f} ({explanation.label}); panel written to {out}")
