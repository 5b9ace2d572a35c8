"""Turn expected user errors into one clear message and exit status 2, never a deep traceback."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import warnings
from typing import TextIO

import typer
from typer.main import get_command

# Exceptions that mean "the user's input is wrong"; their message already names the file or field.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


# Write failures that mean "the disk (or quota) is full", not a bug: one line, exit status 2.
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _click_exception_types() -> tuple[type[BaseException], ...]:
    # Recent typer releases bundle their own copy of click next to (or instead of) the click package.
    types: list[type[BaseException]] = []
    try:
        from typer._click import ClickException as BundledClickException

        types.append(BundledClickException)
    except ImportError:
        pass
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


def _show_warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings as one line for people at a terminal; the source location only with MFCLIP_DEBUG."""
    stream = file if file is not None else sys.stderr
    where = f" ({filename}:{lineno})" if os.environ.get("MFCLIP_DEBUG") else ""
    with contextlib.suppress(OSError, ValueError):
        stream.write(f"mfclip: warning: {message} [{category.__name__}]{where}\n")


def run_app(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run ``app`` and return the process exit status."""
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning_line
    try:
        return _run(app, argv)
    finally:
        warnings.showwarning = previous_showwarning


def _run(app: typer.Typer, argv: list[str] | None) -> int:
    command = get_command(app)
    click_errors = _click_exception_types()
    try:
        result = command.main(args=argv, prog_name="mfclip", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except click_errors as exc:
        # A bad flag or value: one line naming it, and where the command's help is.
        _error_line(exc.format_message())  # type: ignore[attr-defined]
        context = getattr(exc, "ctx", None)
        if context is not None:
            print(f"(see '{context.command_path} -h')", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except USER_ERRORS as exc:
        if os.environ.get("MFCLIP_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        _error_line(str(message))
        print("(set MFCLIP_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES or os.environ.get("MFCLIP_DEBUG"):
            raise
        where = f" {exc.filename}" if exc.filename else " the output"
        _silence_stdout()
        _error_line(f"cannot write{where}: {exc.strerror or exc}")
        return 2
    return result if isinstance(result, int) else 0


def _error_line(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"mfclip: error: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    """After a failed write to stdout, send what is still buffered to /dev/null, so that the flush at
    interpreter exit does not print a second error."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
