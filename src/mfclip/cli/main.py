"""Entry point of the ``mfclip`` command.

Each command group lives in its own module exposing ``register(app)``; modules import heavy
dependencies inside their command functions so ``mfclip --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from mfclip import __version__

# Command modules, in the order they appear in `mfclip --help`.
COMMAND_MODULES: list[str] = [
    "models",
    "data",
    "preprocess",
    "synth",
    "train",
    "eval",
    "report",
    "compare",
    "demo",
    "predict",
    "explain",
    "serve",
    "export",
    "push",
]

app = typer.Typer(
    name="mfclip",
    help="MFCLIP: train, evaluate and run detectors of diffusion-generated and manipulated faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mfclip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """MFCLIP toolkit."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"mfclip.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors (bad files, bad configs) print one clear line and exit with status 2."""
    from mfclip.cli.errors import run_app

    sys.exit(run_app(app, argv))


if __name__ == "__main__":
    main()
