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


# --------------------------------------------------------------------------------------------------
# Bad options and inputs: one line, exit status 2, before any heavy work


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from mfclip.models.checkpoint import save_checkpoint
    from mfclip.models.registry import create_model

    torch.manual_seed(0)
    return save_checkpoint(
        create_model("mfclip-tiny"), tmp_path_factory.mktemp("cli") / "tiny", {"name": "t"}
    )


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mfclip.data.synth import generate_benchmark

    out = tmp_path_factory.mktemp("cli") / "synth"
    generate_benchmark(out, seed=0, size=24, image_size=32, workers=1, progress=False)
    return out


def first_image(benchmark: Path) -> Path:
    from mfclip.data.decode import is_image_path

    return next(p for p in sorted((benchmark / "images").rglob("*")) if is_image_path(p))


def one_error_line(err: str) -> str:
    """The error line of a failed command; fails unless there is exactly one and no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("mfclip: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_binary_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)))
    assert run_app(app, ["train", "--config", str(photo)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "face.jpg: not a YAML config file (binary content" in line


@pytest.mark.parametrize("command", ["predict", "eval", "import", "preprocess", "demo", "synth"])
def test_negative_workers_name_the_flag_before_any_work(
    command: str, tiny_checkpoint: Path, small_benchmark: Path, tmp_path: Path, capsys
) -> None:
    argv = {
        "predict": ["predict", "-c", str(tiny_checkpoint), str(small_benchmark / "images")],
        "eval": ["eval", "-c", str(tiny_checkpoint), "--manifest", str(small_benchmark / "manifest.csv")],
        "import": ["import", "folder", "--root", str(small_benchmark), "--out", str(tmp_path / "m.csv")],
        "preprocess": ["preprocess", str(small_benchmark / "images"), "--out", str(tmp_path / "pp")],
        "demo": ["demo", "--out", str(tmp_path / "demo"), "--fast"],
        "synth": ["synth", "--out", str(tmp_path / "synth")],
    }[command]
    assert run_app(app, [*argv, "--workers", "-1"]) == 2
    captured = capsys.readouterr()
    assert "'--workers'" in one_error_line(captured.err)
    assert "mfclip predict: model" not in captured.err  # refused before the model was loaded
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "pp").exists()


def test_eval_refuses_bad_bootstrap_and_group_by_before_scoring(
    tiny_checkpoint: Path, small_benchmark: Path, tmp_path: Path, capsys
) -> None:
    from mfclip.engine.evaluate import EvaluationError, evaluate

    manifest = small_benchmark / "manifest.csv"
    base = ["eval", "-c", str(tiny_checkpoint), "--manifest", str(manifest), "--split", "all"]
    out = tmp_path / "eval"
    assert run_app(app, [*base, "--bootstrap", "-5", "--out", str(out)]) == 2
    assert "'--bootstrap'" in one_error_line(capsys.readouterr().err)
    assert run_app(app, [*base, "--group-by", "generatr", "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "column 'generatr' is in none of the test sets; did you mean 'generator'?" in line
    assert not out.exists() or not list(out.rglob("predictions*"))  # refused before scoring
    with pytest.raises(EvaluationError, match="bootstrap resamples must be >= 0"):
        evaluate(tmp_path / "no-such-checkpoint", manifest=manifest, bootstrap=-5)  # before loading anything


def test_predict_exit_status(tiny_checkpoint: Path, small_benchmark: Path, tmp_path: Path, capsys) -> None:
    predict = ["predict", "-c", str(tiny_checkpoint), "--no-progress"]
    assert run_app(app, [*predict, str(tmp_path / "missing.png")]) == 2
    assert "missing.png' does not exist" in one_error_line(capsys.readouterr().err)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert run_app(app, [*predict, str(broken), "--out", str(tmp_path / "a.csv")]) == 1
    assert "none of the 1 inputs could be scored" in capsys.readouterr().err
    image = first_image(small_benchmark)
    assert run_app(app, [*predict, str(broken), str(image), "--out", str(tmp_path / "b.csv")]) == 0
    out = tmp_path / "c.csv"
    assert run_app(app, [*predict, str(image), "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "exclude each other" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_on_stdout_is_one_line(tiny_checkpoint: Path, small_benchmark: Path) -> None:
    import os
    import subprocess
    import sys

    image = first_image(small_benchmark)
    command = [sys.executable, "-m", "mfclip.cli.main", "predict", "-c", str(tiny_checkpoint), str(image)]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*command, "--no-progress"], stdout=full, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
        )
    assert done.returncode == 2
    assert "cannot write the output: No space left on device" in one_error_line(done.stderr)
    assert "Exception ignored" not in done.stderr


def test_file_system_errors_name_the_path_in_one_line(tmp_path: Path, capsys) -> None:
    long_name = tmp_path / ("a" * 300)  # longer than any file system allows
    blocker = tmp_path / "afile"
    blocker.write_text("keep me", encoding="utf-8")
    cases = {
        ("manifest", "summary", f"{long_name}.csv"): f"{long_name}.csv: File name too long",
        ("synth", "--out", str(long_name), "-q"): f"{long_name}: File name too long",
        ("import", "folder", "--root", str(tmp_path), "--out", f"{long_name}.csv"): "File name too long",
        ("demo", "--out", str(blocker), "--fast"): f"{blocker}: is a file, where a folder is needed",
    }
    for argv, expected in cases.items():
        assert run_app(app, list(argv)) == 2, argv
        assert expected in one_error_line(capsys.readouterr().err), argv
    assert blocker.read_text(encoding="utf-8") == "keep me"


def write_predictions_csv(path: Path) -> Path:
    rows = ["path,label,p_fake,generator"]
    rows += [f"r{i}.png,0,{0.1 + i / 100:.2f}," for i in range(4)]
    rows += [f"f{i}.png,1,{0.6 + i / 100:.2f},SDXL" for i in range(4)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_report_refuses_an_unknown_grouping_column_a_folder_as_output_and_endless_bootstrap(
    tmp_path: Path, capsys
) -> None:
    predictions = write_predictions_csv(tmp_path / "predictions.csv")
    assert run_app(app, ["report", str(predictions), "--group-by", "generatr"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "column 'generatr' is in none of the predictions; did you mean 'generator'?" in line
    assert run_app(app, ["report", str(predictions), "--out", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder, where a file is needed" in one_error_line(capsys.readouterr().err)
    assert run_app(app, ["report", str(predictions), "--bootstrap", "100000000000"]) == 2
    assert "--bootstrap must be from 0 (0: no intervals) to" in one_error_line(capsys.readouterr().err)
    assert run_app(app, ["report", str(predictions), "--group-by", "generator"]) == 0
    assert "SDXL" in capsys.readouterr().out


def test_huge_or_meaningless_numbers_are_refused_before_any_work(
    tiny_checkpoint: Path, small_benchmark: Path, tmp_path: Path, capsys
) -> None:
    image = str(first_image(small_benchmark))
    manifest = str(small_benchmark / "manifest.csv")
    cases = {
        ("predict", "-c", str(tiny_checkpoint), image, "--devices", "10000000000000000000000"): "'--devices'",
        ("predict", "-c", str(tiny_checkpoint), image, "--threads", "100000000000"): "'--threads'",
        ("export", "-c", str(tiny_checkpoint), "--opset", "0"): "'--opset'",  # used to mean the default
        ("export", "-c", str(tiny_checkpoint), "--atol", "-1"): "'--atol'",
        ("eval", "-c", str(tiny_checkpoint), "-m", manifest, "--bootstrap", "10000000000"): "--bootstrap",
        ("synth", "--out", str(tmp_path / "s"), "--size", "10000000000000000000000"): "size must be",
        ("demo", "--out", str(tmp_path / "d"), "--size", "3", "--fast"): "size must be an integer from 24",
    }
    for argv, expected in cases.items():
        assert run_app(app, list(argv)) == 2, argv
        captured = capsys.readouterr()
        assert expected in one_error_line(captured.err), argv
        assert "mfclip predict: model" not in captured.err and "mfclip export: model" not in captured.err
    assert not (tmp_path / "s").exists() and not (tmp_path / "d").exists()


def test_eval_refuses_a_missing_root_before_writing_anything(
    tiny_checkpoint: Path, small_benchmark: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval"
    argv = ["eval", "-c", str(tiny_checkpoint), "-m", str(small_benchmark / "manifest.csv")]
    assert run_app(app, [*argv, "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "'--root'" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_preprocess_refuses_a_split_its_manifest_could_not_hold(
    small_benchmark: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "faces"
    argv = ["preprocess", str(small_benchmark / "images"), "--out", str(out), "--detector", "none"]
    assert run_app(app, [*argv, "--split", "Test"]) == 2
    err = capsys.readouterr().err
    one_error_line(err)
    assert "labels.split: split 'Test' is not one of train, val, test; did you mean 'test'?" in err
    assert not out.exists()
