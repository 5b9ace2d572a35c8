"""Turn expected user errors into one clear message and exit status 2, never a deep traceback."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import warnings
from pathlib import Path
from typing import TextIO

import typer
from typer.main import get_command

from mfclip.data.paths import display_path

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
    except OSError as exc:
        if os.environ.get("MFCLIP_DEBUG"):
            raise
        if exc.errno is not None and exc.filename is not None:
            # A file system answer about a path the user gave (or one made from it): name the path.
            _error_line(describe_os_error(exc))
        elif exc.errno in WRITE_FAILURES:
            _silence_stdout()
            _error_line(f"cannot write the output: {exc.strerror or exc}")
            return 2
        elif isinstance(exc, USER_ERRORS):
            _error_line(str(exc))
        else:
            raise
        print("(set MFCLIP_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        if os.environ.get("MFCLIP_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        _error_line(str(message))
        print("(set MFCLIP_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error about a path: the path first, then what is wrong with it.

    A rename reports its destination (the path the user chose), not the temporary file written first.
    """
    path = os.fsdecode(exc.filename2 if exc.filename2 is not None else exc.filename)
    shown = display_path(path)
    if isinstance(exc, FileExistsError) and os.path.lexists(path) and not os.path.isdir(path):
        return f"{shown}: is a file, where a folder is needed"
    if isinstance(exc, NotADirectoryError):
        blocker = next((p for p in (path, *map(str, Path(path).parents)) if os.path.isfile(p)), None)
        if blocker is not None and blocker != path:
            return f"{display_path(blocker)}: is a file, where a folder is needed (for {shown})"
        return f"{shown}: is not a folder"
    if isinstance(exc, IsADirectoryError):
        return f"{shown}: is a folder, where a file is needed"
    if exc.errno in WRITE_FAILURES:
        return f"cannot write {shown}: {exc.strerror or exc}"
    return f"{shown}: {exc.strerror or exc}"


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
