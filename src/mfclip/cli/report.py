"""``mfclip report``: rebuild metric tables from saved predictions and put runs side by side."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        runs: list[Path] = typer.Argument(
            ...,
            help="Run directories (RUN/eval/<test_set>/predictions.*), eval directories, test-set "
            "directories or predictions files.",
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Write the markdown here and the table as CSV beside it (.csv)."
        ),
        metric: str = typer.Option("auc", "--metric", "-m", help="auc, ap, eer, acc, real_acc or fake_acc."),
        group_by: list[str] = typer.Option(
            None,
            "--group-by",
            "-g",
            help="Grouping column (repeatable; default: generator and forgery_type, where present).",
            show_default=False,
        ),
        threshold: float = typer.Option(
            0.5, min=0.0, max=1.0, help="A row counts as fake when P(fake) > threshold."
        ),
        video: bool = typer.Option(True, "--video/--no-video", help="Add video-level rows (by video_id)."),
        video_aggregate: str = typer.Option("mean", help="Frame-to-video aggregation: mean or max."),
        bootstrap: int = typer.Option(0, min=0, help="Bootstrap resamples for 95% intervals (0: none)."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
    ) -> None:
        """Tables of one metric across test sets and groups (rows) and runs (columns)."""
        from mfclip.metrics.bootstrap import check_resamples
        from mfclip.metrics.compare import compare_runs, render_comparison, run_labels, write_comparison

        check_resamples(bootstrap, "--bootstrap")
        table = compare_runs(
            runs,
            metric=metric,
            group_by=group_by or None,
            threshold=threshold,
            video=video,
            video_aggregate=video_aggregate,
            bootstrap=bootstrap,
            seed=seed,
        )
        markdown = render_comparison(table, run_labels(runs), metric=metric)
        if out is None:
            typer.echo(markdown)
            return
        md_path, csv_path = write_comparison(table, markdown, out)
        typer.echo(f"wrote {md_path} and {csv_path}")
