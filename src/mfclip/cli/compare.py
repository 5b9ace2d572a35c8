"""``mfclip compare``: train and evaluate several configs on one protocol, then one comparison table."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(
        "compare",
        no_args_is_help=True,
        epilog=(
            "Examples:  mfclip compare mfclip-full clip-probe-b16 xception --protocol diff-cross-forgery "
            "--variant fs --data-dir data  |  mfclip compare fle-l1 fle-l1-l2 fle-l1-l3 mfclip-full "
            "--protocol synthetic --data-dir synth trainer.max_epochs=5  |  mfclip compare mfclip-full "
            "spa-none --protocol synthetic --data-dir synth --seeds 0-2 --reference mfclip-full  |  "
            "mfclip compare --list"
        ),
    )(compare_command)


def compare_command(
    items: list[str] = typer.Argument(
        None,
        help="Configs (YAML files, training presets, experiments, or model presets trained with --base) "
        "and key=value overrides applied to every config.",
    ),
    protocol: str = typer.Option(None, "--protocol", "-p", help="Protocol YAML or bundled name."),
    variant: str = typer.Option(
        None, "--variant", help="One protocol variant (default: every variant, one column each)."
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Folder the protocol's manifest names resolve against."
    ),
    manifest: Path = typer.Option(
        None,
        "--manifest",
        "-m",
        help="The protocol's manifest, or alone: a manifest with train/val/test splits.",
    ),
    root: Path = typer.Option(
        None, "--root", help="Folder image paths are relative to (default: manifest's)."
    ),
    out: Path = typer.Option(
        Path("compare"), "--out", "-o", help="Output folder (runs/, comparison.md, .csv)."
    ),
    study: str = typer.Option(
        None,
        "--study",
        help="A study (bundled name or YAML): its columns, shared overrides, seeds and reference; CONFIGs "
        "given too become extra columns.",
    ),
    base: str = typer.Option(
        None, "--base", help="Training preset for configs given as model presets (default: default)."
    ),
    seeds: str = typer.Option(
        None,
        "--seeds",
        help="Train every config once per training seed (0,1,2 or 0-4); adds mean ± sd and paired "
        "differences from --reference.",
    ),
    reference: str = typer.Option(
        None,
        "--reference",
        help="With --seeds: the config the others are compared with (default: the first).",
    ),
    bootstrap: int = typer.Option(
        0,
        "--bootstrap",
        min=0,
        help="Bootstrap resamples for 95% intervals (0: none); with --seeds also a paired bootstrap of "
        "the differences over test images.",
    ),
    perturb: list[str] = typer.Option(
        None, "--perturb", help="Also evaluate under degradations (jpeg75, blur2, ..., 'standard')."
    ),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Evaluation batch size."),
    device: str = typer.Option("auto", "--device", help="Evaluation device: auto, cpu, cuda, ..."),
    list_configs: bool = typer.Option(
        False, "--list", help="List training presets and experiments, then exit."
    ),
) -> None:
    """Train (or reuse) and evaluate each config on the protocol, then write comparison.md and .csv.

    Reruns reuse finished runs, resume interrupted ones and skip evaluations already written.
    """
    from mfclip.engine.compare import compare, list_experiments, list_studies, parse_seeds
    from mfclip.engine.config import list_train_presets

    if list_configs:
        typer.echo("training presets: " + ", ".join(list_train_presets()))
        typer.echo("experiments:      " + ", ".join(list_experiments()))
        typer.echo("studies (--study): " + ", ".join(list_studies()))
        typer.echo("(model presets, trained with --base: `mfclip models`)")
        return
    items = items or []
    overrides = [item for item in items if "=" in item]
    configs = [item for item in items if "=" not in item]
    if not configs and study is None:
        raise typer.BadParameter("give at least one config (or --study)", param_hint="ITEMS")
    result = compare(
        configs,
        protocol,
        study=study,
        variant=variant,
        data_dir=data_dir,
        manifest=manifest,
        root=root,
        out_dir=out,
        overrides=overrides,
        base=base,
        seeds=parse_seeds(seeds) if seeds is not None else None,
        reference=reference,
        bootstrap=bootstrap,
        perturb=perturb or None,
        batch_size=batch_size,
        device=device,
    )
    typer.echo(result.markdown_path.read_text(encoding="utf-8"))
    written = f"{result.markdown_path} and {result.csv_path}"
    if result.seeds_csv_path is not None:
        written = f"{result.markdown_path}, {result.csv_path} and {result.seeds_csv_path}"
    typer.echo(f"wrote {written}; runs in {out / 'runs'}")
