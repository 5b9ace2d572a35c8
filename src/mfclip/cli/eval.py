"""``mfclip eval``: score a checkpoint on a protocol's test sets (or a manifest) and write the reports."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(eval_command)


def eval_command(
    checkpoint: Path = typer.Option(
        ...,
        "--checkpoint",
        "-c",
        help="Checkpoint directory, Lightning .ckpt file, or training run directory (scores RUN/best).",
    ),
    protocol: str = typer.Option(
        None,
        "--protocol",
        "-p",
        help="Protocol YAML or bundled name: diff-cross-forgery, diff-leave-generator-out, "
        "genface-cross-generator, cross-dataset, robustness, synthetic.",
    ),
    variant: str = typer.Option(
        None, "--variant", help="Protocol variant (default: the one the checkpoint was trained on)."
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Folder the protocol's manifest names resolve against."
    ),
    manifest: Path = typer.Option(
        None, "--manifest", "-m", help="A manifest: alone, its --split rows; with --protocol, its manifest."
    ),
    root: Path = typer.Option(
        None,
        "--root",
        exists=True,
        file_okay=False,
        help="Folder image paths are relative to (default: manifest's).",
    ),
    split: list[str] = typer.Option(
        ["test"], "--split", help="With --manifest alone: the split(s) to score, or 'all'."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (default: RUN/eval for RUN/best, else CHECKPOINT-eval)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (GPU when present), cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option(None, "--dtype", help="float32 (default), bfloat16 or float16."),
    workers: int = typer.Option(
        None, "--workers", "-j", min=0, help="Decoding worker processes (default: by CPUs)."
    ),
    bootstrap: int = typer.Option(
        0, "--bootstrap", min=0, help="Bootstrap resamples for 95% intervals (0: none)."
    ),
    perturb: list[str] = typer.Option(
        None,
        "--perturb",
        help="Also score each test set degraded: jpeg75, downscale0.5, blur2, noise10, 'standard' (all "
        "twelve levels) or 'none'. Default: the protocol's robustness list.",
    ),
    group_by: list[str] = typer.Option(
        ["generator", "forgery_type"], "--group-by", "-g", help="Per-group metrics for these columns."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise degradation and the bootstrap."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write ROC and histogram PNGs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score every test set, write predictions, metrics, reports and plots; resumes an interrupted run.

    Without --protocol and --manifest, a run's checkpoint (RUN/best) is evaluated on the data its training
    used (RUN/config.yaml).
    """
    from mfclip.engine.evaluate import evaluate
    from mfclip.metrics.bootstrap import check_resamples
    from mfclip.metrics.report import METRIC_TITLES, format_value

    check_resamples(bootstrap, "--bootstrap")
    result = evaluate(
        checkpoint,
        protocol=protocol,
        manifest=manifest,
        variant=variant,
        data_dir=data_dir,
        root=root,
        split=split,
        out_dir=out,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        workers=workers,
        bootstrap=bootstrap,
        perturb=perturb or None,
        seed=seed,
        group_by=group_by,
        plots=plots,
        progress=progress,
    )
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Evaluation of {result.checkpoint or checkpoint}")
    table.add_column("test set", no_wrap=True)
    metrics = ("auc", "ap", "eer", "acc")
    for metric in metrics:
        table.add_column(METRIC_TITLES[metric], justify="right")
    table.add_column("images", justify="right")
    for name, values in result.metrics.items():
        overall = values["overall"]
        table.add_row(name, *(format_value(overall.get(m)) for m in metrics), str(overall.get("n")))
    console = Console()
    if result.checkpoint is not None and result.checkpoint != checkpoint:
        console.print(f"{checkpoint} is a training run: scored its best model {result.checkpoint}")
    console.print(table)
    if result.resumed:
        console.print(f"{len(result.resumed)} test set(s) were already complete and kept.")
    console.print(f"Report: {result.files.get('report')}")
    if "robustness" in result.files:
        console.print(f"Robustness table: {result.files['robustness']}")
    console.print(
        f"Per test set: {result.out_dir}/<test_set>/ (predictions.parquet, metrics.json, report.md)"
    )
