"""``mfclip train``: train a detector from a preset or YAML config with ``key=value`` overrides."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command(
        "train",
        context_settings={"allow_extra_args": False},
        epilog=(
            "Examples:  mfclip train --config tiny --manifest data/manifest.csv --root data  |  "
            "mfclip train --protocol diff-cross-forgery --variant t2i trainer.max_epochs=10  |  "
            "mfclip train --resume runs/mfclip-vit-b16-20250101-120000"
        ),
    )
    def train_command(
        overrides: list[str] | None = typer.Argument(
            None, help="Config overrides as dotted key=value, e.g. trainer.max_epochs=5 data.batch_size=32."
        ),
        config: str | None = typer.Option(
            None,
            "--config",
            "-c",
            help="Training preset name (default, tiny, demo) or YAML file (default: default).",
        ),
        protocol: str | None = typer.Option(
            None, "--protocol", help="Protocol name or YAML; without --variant every variant is trained."
        ),
        variant: str | None = typer.Option(
            None, "--variant", help="Train only this variant of the protocol."
        ),
        data_dir: str | None = typer.Option(
            None, "--data-dir", help="Folder the protocol's manifest paths are relative to."
        ),
        manifest: str | None = typer.Option(
            None,
            "--manifest",
            help="Manifest CSV/Parquet (rows with split train/val, or the protocol's data).",
        ),
        root: str | None = typer.Option(
            None,
            "--root",
            help="Folder the manifest's image paths are relative to (default: its own folder).",
        ),
        resume: str | None = typer.Option(
            None,
            "--resume",
            help="Continue a run: its directory (uses checkpoints/last.ckpt) or a .ckpt file.",
        ),
        resume_from: str | None = typer.Option(
            None,
            "--resume-from",
            help="With --resume RUN: resume from best or step-N instead of last (when last.ckpt is damaged).",
        ),
        out: str | None = typer.Option(
            None, "--out", "-o", help="Run directory (default: runs/<name>-<timestamp>)."
        ),
        print_config: bool = typer.Option(
            False,
            "--print-config",
            help="Check the config (protocol, model) and print it resolved as YAML; trains nothing.",
        ),
    ) -> None:
        """Train a detector; writes checkpoints, logs and the best model (RUN/best) into a run directory."""
        import sys

        from mfclip.engine import runinfo
        from mfclip.engine.distributed import is_launch_rank_zero
        from mfclip.engine.train import (
            TrainingInterrupted,
            check_config,
            compose_config,
            train_from_args,
        )

        options = {
            "protocol": protocol,
            "variant": variant,
            "data_dir": data_dir,
            "manifest": manifest,
            "root": root,
            "out": out,
            "resume": resume,
            "resume_from": resume_from,
        }
        if print_config:
            resolved = compose_config(config, overrides or [], **options)
            check_config(resolved)
            typer.echo(resolved.to_yaml(), nl=False)
            return
        try:
            results = train_from_args(config, overrides or [], argv=list(sys.argv), **options)
        except TrainingInterrupted as exc:
            if is_launch_rank_zero():
                typer.echo(f"Interrupted: {exc}", err=True)
            raise typer.Exit(130) from None
        if not is_launch_rank_zero():
            return  # every process of a multi-process run trains; rank 0 reports
        for result in results:
            auc = f"{result.best_val_auc:.4f}" if result.best_val_auc is not None else "n/a"
            label = f"[{result.variant}] " if result.variant else ""
            typer.echo(
                f"{label}{result.status}: {result.global_step} steps, {result.epochs} epochs, "
                f"best val AUC {auc}; run: {result.run_dir}"
                + (f"; best model: {result.best_checkpoint_dir}" if result.best_checkpoint_dir else "")
            )
            corrupt = result.summary.get("corrupt_files", {}).get("count", 0)
            if corrupt:
                typer.echo(
                    f"{label}{corrupt} unreadable image(s) skipped, listed in "
                    f"{result.run_dir / runinfo.SUMMARY_FILE} (corrupt_files)"
                )
