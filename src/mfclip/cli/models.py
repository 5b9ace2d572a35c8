"""``mfclip models``: list the model presets with parameter counts, or show one's resolved config."""

from __future__ import annotations

import shutil

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
        rows = [("name", "type", "image", "params", "inference", "description")]
        for name in names:
            info = registry.model_summary(name)
            rows.append(
                (
                    info["name"],
                    info["type"],
                    str(info["image_size"]),
                    f"{info['params'] / 1e6:.1f}M",
                    f"{info['inference_params'] / 1e6:.1f}M",
                    info["description"],
                )
            )
        typer.echo("\n".join(_format_table(rows, shutil.get_terminal_size().columns)))


def _format_table(rows: list[tuple[str, ...]], width: int) -> list[str]:
    """Plain aligned columns (numbers right-aligned); only the last column is cut to fit ``width``."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(w) if index and cell[:1].isdigit() else cell.ljust(w)
            for cell, w in zip(row[:-1], widths, strict=False)
        ]
        line = "  ".join([*cells, row[-1]])
        if len(line) > width:
            line = line[: max(width - 1, sum(widths) + 2 * len(widths) + 10)].rstrip() + "…"
        lines.append(line)
    return lines
