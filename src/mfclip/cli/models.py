"""``mfclip models``: list the model presets with parameter counts, or show one's resolved config."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        pattern: str | None = typer.Option(
            None, "--pattern", "-p", help="Only names matching this shell pattern, e.g. 'mfclip-*'."
        ),
        show: str | None = typer.Option(
            None, "--show", help="Print the resolved config of this preset (or YAML path) as YAML."
        ),
    ) -> None:
        """List model presets (parameters total / at inference), or print one's resolved config."""
        from mfclip.models import registry

        if show:
            typer.echo(registry.config_yaml(registry.get_model_config(show)), nl=False)
            return
        names = registry.list_models(pattern)
        if not names:
            typer.echo(f"no model preset matches {pattern!r}; presets: {', '.join(registry.list_models())}")
            raise typer.Exit(1)
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Model presets")
        table.add_column("name", no_wrap=True, min_width=19)
        table.add_column("type", no_wrap=True, min_width=13)
        table.add_column("image", justify="right", no_wrap=True, min_width=5)
        table.add_column("params", justify="right", no_wrap=True, min_width=6)
        table.add_column("inference", justify="right", no_wrap=True, min_width=9)
        table.add_column("description", overflow="ellipsis", no_wrap=True, max_width=60)
        for name in names:
            info = registry.model_summary(name)
            table.add_row(
                info["name"],
                info["type"],
                str(info["image_size"]),
                f"{info['params'] / 1e6:.1f}M",
                f"{info['inference_params'] / 1e6:.1f}M",
                info["description"],
            )
        Console().print(table)
