"""The ``mfclip`` entry point: every capability is a command, and output-path mistakes are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfclip.cli.errors import run_app
from mfclip.cli.main import COMMAND_MODULES, app

COMMANDS = ("models", "import", "manifest", "preprocess", "synth", "train", "eval", "report", "compare")
COMMANDS += ("demo", "predict", "explain", "serve", "export", "push")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--help"]) == 0
    listed = capsys.readouterr().out
    missing = [name for name in COMMANDS if f" {name} " not in listed]
    assert not missing, f"missing from `mfclip --help`: {missing}"
    assert len(COMMAND_MODULES) == len(set(COMMAND_MODULES))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from mfclip import __version__

    assert run_app(app, ["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["existing file", "inside a file"])
def test_output_path_mistakes_are_one_line_errors(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("keep me", encoding="utf-8")
    out = blocker if kind == "existing file" else blocker / "bench"
    code = run_app(app, ["synth", "--out", str(out), "--size", "24", "--image-size", "32", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mfclip: error:") and "afile" in err and "Traceback" not in err
    assert blocker.read_text(encoding="utf-8") == "keep me"


def test_warnings_print_as_one_line_and_the_hook_is_restored(capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    import typer

    demo = typer.Typer()

    @demo.command()
    def run() -> None:
        warnings.warn("test set 'seen' has one class: AUC undefined", UserWarning, stacklevel=1)

    @demo.command()
    def other() -> None:  # a second command keeps typer from collapsing the app into one command
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        assert run_app(demo, ["run"]) == 0
        assert warnings.showwarning is before
    err = capsys.readouterr().err
    assert err == "mfclip: warning: test set 'seen' has one class: AUC undefined [UserWarning]\n"
