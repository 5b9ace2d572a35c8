"""``mfclip import`` (dataset layout → manifest), ``mfclip manifest validate|summary`` (docs/data.md)."""

from __future__ import annotations

from pathlib import Path

import typer

# Kept in sync with mfclip.data.importers.list_importers() (a test checks); listed here so that
# `mfclip --help` does not import the importers.
IMPORTERS_HELP = "diff, diffusionface, genface, ffpp, dfd, celebdf, dfdc, deepfakebench, folder"

manifest_app = typer.Typer(
    name="manifest", help="Check and describe manifests.", no_args_is_help=True, add_completion=False
)


def register(app: typer.Typer) -> None:
    app.command("import", no_args_is_help=True)(import_command)
    app.add_typer(manifest_app, name="manifest")


def _parse_fractions(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(
            f"--split-fractions: expected three numbers like 0.8,0.1,0.1, got {text!r}"
        ) from None
    if len(values) != 3:
        raise ValueError(f"--split-fractions: expected three numbers (train,val,test), got {text!r}")
    return values  # type: ignore[return-value]


def import_command(
    dataset: str = typer.Argument(..., help=f"Importer: {IMPORTERS_HELP}.", show_default=False),
    root: Path = typer.Option(..., "--root", help="The dataset's folder; manifest paths are relative to it."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest to write (.csv or .parquet)."),
    csv: Path = typer.Option(None, "--csv", help="genface: CSV of path, generator [, label, split, ...]."),
    json_path: Path = typer.Option(None, "--json", help="deepfakebench: the dataset JSON file."),
    split_dir: Path = typer.Option(None, "--split-dir", help="ffpp: folder of train/val/test.json."),
    compression: str = typer.Option(
        None, "--compression", help="ffpp/dfd: raw (or c0), c23 (default), c40 or all."
    ),
    media: str = typer.Option(
        None, "--media", help="ffpp/dfd/celebdf/dfdc: auto (default), videos or frames."
    ),
    dataset_name: str = typer.Option(None, "--dataset-name", help="Value of the dataset column."),
    default_split: str = typer.Option(
        None, "--default-split", help="Split of rows the layout gives none (train, val or test)."
    ),
    split_fractions: str = typer.Option(
        None,
        "--split-fractions",
        help="Assign rows without a split by a stable hash of their video/path, e.g. 0.8,0.1,0.1.",
    ),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of --split-fractions."),
    verify: str = typer.Option(
        "header",
        "--verify",
        help="File checks: none (size only), header (default) or full (decode every image).",
    ),
    workers: int = typer.Option(8, "--workers", "-j", min=1, help="Threads checking files."),
    prompt_set: str = typer.Option(
        "default", "--prompt-set", help="Prompt set whose generator table fills labels."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Scan a dataset's own layout and write a manifest; skipped files go to MANIFEST.skipped.csv."""
    from mfclip.data.importers import get_importer, run_import

    info = get_importer(dataset)
    given = {
        "csv": csv,
        "json_path": json_path,
        "split_dir": split_dir,
        "compression": compression,
        "media": media,
    }
    flags = {"csv": "--csv", "json_path": "--json", "split_dir": "--split-dir"}
    for name, value in given.items():
        if value is not None and name not in info.options:
            raise ValueError(f"{flags.get(name, '--' + name)} does not apply to the {dataset} importer")
    options = {k: v for k, v in given.items() if v is not None}
    result = run_import(
        dataset,
        root,
        out,
        dataset_name=dataset_name,
        default_split=default_split,
        split_fractions=_parse_fractions(split_fractions),
        split_seed=split_seed,
        verify=verify,  # type: ignore[arg-type]
        workers=workers,
        prompt_set=prompt_set,
        progress=progress,
        **options,
    )
    frame = result.frame()
    real = int((frame["label"] == 0).sum())
    typer.echo(f"wrote {len(frame)} rows ({real} real, {len(frame) - real} fake) to {result.manifest_path}")
    splits = frame["split"].value_counts().to_dict()
    typer.echo("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    typer.echo(f"skipped {len(result.skipped)} files or folders, listed in {result.skipped_path}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@manifest_app.command("validate", no_args_is_help=True)
def validate_command(
    manifest: Path = typer.Argument(..., help="Manifest (.csv or .parquet).", show_default=False),
    root: Path = typer.Option(None, "--root", help="Dataset root (default: the manifest's folder)."),
    check_files: bool = typer.Option(
        True, "--check-files/--no-check-files", help="Check that every file exists."
    ),
    limit: int = typer.Option(50, "--limit", min=0, help="Problems to print (0: all)."),
    prompt_set: str = typer.Option("default", "--prompt-set", help="Prompt set for the vocabulary warnings."),
) -> None:
    """Print every problem of a manifest with its row and column; exit status 2 when it has errors."""
    from mfclip.data.manifest import read_manifest, validate_manifest

    df = read_manifest(manifest)
    report = validate_manifest(
        df,
        root=root if root is not None else manifest.parent,
        check_files=check_files,
        prompt_set=prompt_set,
        progress=True,
        source=str(manifest),
    )
    typer.echo(report.format(None if limit <= 0 else limit))
    if not report.ok:
        # SystemExit rather than typer.Exit: run_app passes it through with its status in every mode.
        raise SystemExit(2)


@manifest_app.command("summary", no_args_is_help=True)
def summary_command(
    manifest: Path = typer.Argument(..., help="Manifest (.csv or .parquet).", show_default=False),
) -> None:
    """Counts by split, label, dataset, forgery type, family and generator."""
    from rich.console import Console
    from rich.table import Table

    from mfclip.data.manifest import read_manifest, summarize_manifest

    summary = summarize_manifest(read_manifest(manifest))
    console = Console()
    console.print(
        f"[bold]{manifest}[/bold]: {summary['rows']} rows, {summary['real']} real, {summary['fake']} fake, "
        f"{summary['videos']} videos"
        + (f", {summary['video_files']} video files" if summary["video_files"] else ""),
        soft_wrap=True,  # one line however long the path: easy to grep
    )
    for key, title in (
        ("split", "split"),
        ("dataset", "dataset"),
        ("forgery_type", "forgery type (fakes)"),
        ("family", "family (fakes)"),
        ("generator", "generator (fakes)"),
    ):
        counts = summary[key]
        if not counts:
            continue
        classes = [c for c in ("real", "fake", "invalid") if any(c in v for v in counts.values())]
        table = Table(title=title, title_justify="left")
        table.add_column(key)
        for cls in classes:
            table.add_column(cls, justify="right")
        for value, by_class in sorted(counts.items()):
            table.add_row(value, *(str(by_class.get(c, 0)) for c in classes))
        console.print(table)
