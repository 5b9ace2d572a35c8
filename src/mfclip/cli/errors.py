"""Turn expected user errors into one clear message and exit status 2, never a deep traceback."""

from __future__ import annotations

import os
import sys

import typer
from typer.main import get_command

# Exceptions that mean "the user's input is wrong"; their message already names the file or field.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, PermissionError)


def run_app(app: typer.Typer, argv: list[str] | None = None) -> int:
    command = get_command(app)
    try:
        command.main(args=argv, prog_name="mfclip", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, USER_ERRORS) and not os.environ.get("MFCLIP_DEBUG"):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"mfclip: error: {message}", file=sys.stderr)
            print("(set MFCLIP_DEBUG=1 for the full traceback)", file=sys.stderr)
            return 2
        raise
    return 0
