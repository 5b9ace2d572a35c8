"""`mfclip predict`: folders, videos, bad files, CSV/JSONL, incremental writes and resume, faces, devices."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mfclip import Detector
from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.inference.predict import OUTPUT_COLUMNS, PredictOptions, collect_inputs, iter_rows, predict_files
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(
        create_model("mfclip-tiny"), tmp_path_factory.mktemp("pred") / "tiny", {"name": "predict-test"}
    )


@pytest.fixture(scope="module")
def detector(checkpoint: Path) -> Detector:
    return Detector.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, astronaut_rgb: np.ndarray) -> Path:
    """A folder tree with good images, bad files and a video."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "real" / "nested").mkdir(parents=True)
    for i in range(5):
        crop = astronaut_rgb[i * 30 : i * 30 + 320, i * 20 : i * 20 + 320]
        Image.fromarray(crop).save(root / "real" / f"img{i}.png")
    Image.fromarray(astronaut_rgb[100:, 50:]).save(root / "real" / "nested" / "photo.jpg", quality=90)
    (root / "zero.png").write_bytes(b"")
    (root / "notes.png").write_bytes(b"this is not an image")
    (root / "real" / "cut.jpg").write_bytes((root / "real" / "nested" / "photo.jpg").read_bytes()[:500])
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 nothing more")
    (root / "readme.txt").write_text("skipped inside folders: not an image or video extension")
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 128))
    for i in range(10):
        frame = np.ascontiguousarray(astronaut_rgb[i * 10 : i * 10 + 128, i * 10 : i * 10 + 128])
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return root


def cli(*args: str) -> int:
    return run_app(app, [str(a) for a in args])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_folder_with_images_video_and_bad_files(
    checkpoint: Path, detector: Detector, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    code = cli("predict", "--checkpoint", checkpoint, inputs, "--out", out, "--frames", 4, "-b", 3)
    assert code == 0
    err = capsys.readouterr().err
    assert "model predict-test (mfclip-tiny)" in err  # the model card line
    assert "4 with errors" in err  # the summary
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert list(read_csv(out)[0]) == list(OUTPUT_COLUMNS)
    assert set(rows) == {
        *(f"img{i}.png" for i in range(5)),
        "photo.jpg",
        "zero.png",
        "notes.png",
        "cut.jpg",
        "broken.mp4",
        "clip.mp4",
    }
    for i in range(5):
        row = rows[f"img{i}.png"]
        expected = detector.predict(inputs / "real" / f"img{i}.png")
        assert float(row["p_fake"]) == pytest.approx(expected.p_fake, abs=1e-6)
        assert row["label"] == expected.label and row["error"] == "" and row["frames"] == ""
    assert rows["zero.png"]["error"] == "empty file (0 bytes)" and rows["zero.png"]["p_fake"] == ""
    assert "not a recognised image" in rows["notes.png"]["error"]
    assert "truncated" in rows["cut.jpg"]["error"]
    assert "video" in rows["broken.mp4"]["error"] or "frames" in rows["broken.mp4"]["error"]
    # The CLI refuses a missing input path (exit status 2); the Python API gives it an error row.
    missing = tmp_path / "missing.png"
    predict_files(detector, [missing], tmp_path / "missing.csv", PredictOptions(progress=False))
    assert [r["error"] for r in read_csv(tmp_path / "missing.csv")] == ["file not found"]
    video = rows["clip.mp4"]
    expected_video = detector.predict_video(inputs / "clip.mp4", frames=4)
    assert int(video["frames"]) == 4 and video["error"] == ""
    assert float(video["p_fake"]) == pytest.approx(expected_video.p_fake, abs=1e-6)
    assert float(video["p_fake_max"]) == pytest.approx(expected_video.p_fake_max, abs=1e-6)


def test_jsonl_threshold_and_typed_rows(checkpoint: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    assert (
        cli("predict", "-c", checkpoint, inputs / "real", "--out", out, "--threshold", 0.0, "--no-progress")
        == 0
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 7 and all(set(row) == set(OUTPUT_COLUMNS) for row in rows)
    good = [row for row in rows if row["error"] is None]
    assert len(good) == 6 and all(row["label"] == "fake" for row in good)  # threshold 0: all fake
    assert all(isinstance(row["p_fake"], float) for row in good)
    assert [r["path"] for r in iter_rows(out)] == [r["path"] for r in rows]


def test_resume_appends_only_missing_paths_and_repairs_a_torn_line(
    detector: Detector, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    images = sorted((inputs / "real").glob("img*.png"))
    summary = predict_files(detector, images[:2], out, PredictOptions(progress=False))
    assert summary.written == 2
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(f"{images[2]},0.12")  # a row cut short by a crash
    with pytest.raises(ValueError, match="--resume"):
        predict_files(detector, images, out, PredictOptions(progress=False))
    summary = predict_files(detector, images, out, PredictOptions(progress=False, resume=True))
    assert (summary.inputs, summary.skipped, summary.written) == (5, 2, 3)
    rows = read_csv(out)
    assert [r["path"] for r in rows] == [str(p) for p in images]
    again = predict_files(detector, images, out, PredictOptions(progress=False, resume=True))
    assert again.written == 0 and len(read_csv(out)) == 5
    fresh = predict_files(detector, images[:1], out, PredictOptions(progress=False, overwrite=True))
    assert fresh.written == 1 and len(read_csv(out)) == 1


def test_resume_refuses_other_settings_and_a_second_run_on_the_same_output(
    detector: Detector, checkpoint: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mfclip.utils.jobs import JobLock, JobLockedError, SettingsChangedError

    out = tmp_path / "scores.csv"
    images = sorted((inputs / "real").glob("img*.png"))
    predict_files(detector, images[:2], out, PredictOptions(progress=False, threshold=0.3))
    stamp = json.loads((tmp_path / "scores.csv.settings.json").read_text())["settings"]
    assert stamp["threshold"] == 0.3 and stamp["checkpoint"].startswith("sha256:")
    with pytest.raises(
        SettingsChangedError,
        match=r"scores.csv holds rows made with other settings \(frames: 16 -> 4; threshold: 0.3 -> 0.5\)",
    ):
        predict_files(detector, images, out, PredictOptions(progress=False, resume=True, frames=4))
    assert cli("predict", "-c", checkpoint, *images, "--out", out, "--resume", "--no-progress") == 2
    assert "threshold: 0.3 -> 0.5" in capsys.readouterr().err
    assert len(read_csv(out)) == 2  # nothing appended
    with (
        JobLock(tmp_path / "scores.csv.lock", "predict", out),
        pytest.raises(JobLockedError, match=f"{out} is in use by another predict run"),
    ):
        predict_files(detector, images, out, PredictOptions(progress=False, resume=True, threshold=0.3))
    summary = predict_files(detector, images, out, PredictOptions(progress=False, resume=True, threshold=0.3))
    assert (summary.skipped, summary.written) == (2, 3) and not (tmp_path / "scores.csv.lock").exists()
    # An output of an older release has no stamp: it resumes, and its settings are recorded from then on.
    (tmp_path / "scores.csv.settings.json").unlink()
    again = predict_files(detector, images, out, PredictOptions(progress=False, resume=True))
    assert again.written == 0 and json.loads((tmp_path / "scores.csv.settings.json").read_text())
    # --overwrite starts a new output with new settings.
    fresh = predict_files(detector, images[:1], out, PredictOptions(progress=False, overwrite=True, frames=4))
    assert fresh.written == 1
    assert json.loads((tmp_path / "scores.csv.settings.json").read_text())["settings"]["frames"] == 4


def test_odd_file_names_round_trip_through_csv_and_resume(
    detector: Detector, inputs: Path, tmp_path: Path
) -> None:
    """A name with a newline, a quote and bytes that are not UTF-8 is written and read back exactly."""
    folder = tmp_path / "odd"
    folder.mkdir()
    source = (inputs / "real" / "img0.png").read_bytes()
    names = [os.fsdecode(b"caf\xe9.png"), 'two\nlines "quoted".png', "plain.png"]
    for name in names:
        (folder / name).write_bytes(source)
    assert sorted(collect_inputs([folder])) == sorted(str(folder / n) for n in names)  # found in folders too
    out = tmp_path / "scores.csv"
    first = predict_files(
        detector, [folder / names[0], folder / names[1]], out, PredictOptions(progress=False)
    )
    assert first.written == 2 and first.errors == 0
    with open(out, "ab") as handle:
        handle.write(b'"' + os.fsencode(folder / "torn") + b"\nhalf")  # cut inside a quoted cell
    again = predict_files(
        detector, [folder / n for n in names], out, PredictOptions(progress=False, resume=True)
    )
    assert (again.skipped, again.written) == (2, 1)
    assert sorted(row["path"] for row in iter_rows(out)) == sorted(str(folder / n) for n in names)


def test_resume_knows_a_file_however_its_path_is_written(
    detector: Detector, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative or absolute, ``./`` or ``..``: a file already in the output is not scored again, and a
    resume from another folder keeps the output's relative paths meaning what they meant."""
    work = tmp_path / "work"
    (work / "imgs").mkdir(parents=True)
    for i in range(4):
        (work / "imgs" / f"{i}.png").write_bytes((inputs / "real" / f"img{i}.png").read_bytes())
    monkeypatch.chdir(work)
    out = Path("scores.csv")
    predict_files(detector, ["imgs/0.png", "./imgs/1.png"], out, PredictOptions(progress=False))
    assert collect_inputs(["imgs/2.png", work / "imgs" / "2.png", "imgs/../imgs/2.png"]) == ["imgs/2.png"]
    again = predict_files(
        detector, [work / "imgs", "../work/imgs/0.png"], out, PredictOptions(progress=False, resume=True)
    )
    assert (again.skipped, again.written) == (2, 2)
    assert [row["path"] for row in iter_rows(out)] == [
        "imgs/0.png",
        "imgs/1.png",
        str(work / "imgs" / "2.png"),
        str(work / "imgs" / "3.png"),
    ]
    # From another folder, imgs/ is another folder: its files are new, and written as absolute paths.
    other = tmp_path / "other"
    (other / "imgs").mkdir(parents=True)
    (other / "imgs" / "0.png").write_bytes((inputs / "real" / "img4.png").read_bytes())
    monkeypatch.chdir(other)
    moved = predict_files(
        detector, ["imgs/0.png"], work / "scores.csv", PredictOptions(progress=False, resume=True)
    )
    assert (moved.skipped, moved.written) == (0, 1)
    assert [row["path"] for row in iter_rows(work / "scores.csv")][-1] == str(other / "imgs" / "0.png")
    monkeypatch.chdir(work)
    assert predict_files(detector, ["imgs"], out, PredictOptions(progress=False, resume=True)).written == 0


def test_output_errors_are_clear(checkpoint: Path, inputs: Path, tmp_path: Path, capsys) -> None:
    assert cli("predict", "-c", checkpoint, inputs / "real", "--out", tmp_path / "scores.txt") == 2
    assert "must end in .csv or .jsonl" in capsys.readouterr().err
    assert cli("predict", "-c", tmp_path / "no-checkpoint", inputs / "real") == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_stdout_when_no_out(checkpoint: Path, inputs: Path, capsys) -> None:
    assert cli("predict", "-c", checkpoint, inputs / "real" / "img0.png", "--no-progress") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["path"].endswith("img0.png")
    assert 0.0 <= float(rows[0]["p_fake"]) <= 1.0 and rows[0]["error"] == ""


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_empty_folder_warns_and_leaves_a_valid_empty_output(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("neither an image nor a video")
    out = tmp_path / f"scores{suffix}"
    assert cli("predict", "-c", checkpoint, empty, "--out", out, "--no-progress") == 0
    err = capsys.readouterr().err
    assert f"no images or videos found under {empty}" in err and f"wrote 0 rows to {out}" in err
    assert out.read_text(encoding="utf-8") == (
        "path,p_fake,label,p_fake_max,frames,box,error\n" if suffix == ".csv" else ""
    )
    assert list(iter_rows(out)) == []
    assert cli("predict", "-c", checkpoint, empty, "--out", out, "--resume", "--no-progress") == 0
    assert list(iter_rows(out)) == []


def test_empty_folder_on_stdout_prints_the_header(checkpoint: Path, tmp_path: Path, capsys) -> None:
    assert cli("predict", "-c", checkpoint, tmp_path, "--no-progress") == 0
    captured = capsys.readouterr()
    assert captured.out == ",".join(OUTPUT_COLUMNS) + "\n"
    assert "no images or videos found" in captured.err


def test_header_beyond_the_decompression_bomb_limit_is_an_error_row(
    checkpoint: Path, inputs: Path, tmp_path: Path
) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"  # declares 15000 x 15000 = 225 MP, beyond PIL's own ~179 MP refusal
    header = struct.pack(">IIBBBBB", 15000, 15000, 8, 2, 0, 0, 0)
    huge.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(100)))
        + chunk(b"IEND", b"")
    )
    out = tmp_path / "scores.csv"
    good = inputs / "real" / "img0.png"
    assert cli("predict", "-c", checkpoint, huge, good, "--out", out, "--no-progress") == 0
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert rows["img0.png"]["error"] == "" and rows["huge.png"]["p_fake"] == ""
    assert "image is 15000x15000 = 225000000 pixels, above the limit 64000000" in rows["huge.png"]["error"]


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("foo", "--device foo: not a device (auto, cpu, cuda, cuda:N, mps)"),
        ("cuda", "--device cuda: no CUDA device is available (use auto or cpu)"),
        ("cuda:1", "--device cuda:1: no CUDA device is available (use auto or cpu)"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "explain", "serve"])
def test_bad_device_is_a_one_line_error(
    checkpoint: Path,
    inputs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    device: str,
    message: str,
    command: str,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    image = inputs / "real" / "img0.png"
    arguments = {
        "predict": [image, "--out", tmp_path / "scores.csv"],
        "explain": [image, "--out", tmp_path / "panel.png"],
        "serve": ["--port", "0"],
    }[command]
    assert cli(command, "-c", checkpoint, *arguments, "--device", device) == 2
    err = capsys.readouterr().err
    assert f"mfclip: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "scores.csv").exists() and not (tmp_path / "panel.png").exists()


def test_face_detection_and_workers(checkpoint: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces.csv"
    code = cli(
        "predict",
        "-c",
        checkpoint,
        inputs / "real",
        "--out",
        out,
        "--face-detect",
        "haar",
        "--workers",
        1,
        "-b",
        2,
    )
    assert code == 0
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    boxes = [rows[name]["box"] for name in rows if rows[name]["error"] == ""]
    assert len(boxes) == 6 and sum(box != "" for box in boxes) >= 3
    x0, y0, x1, y1 = (int(v) for v in next(b for b in boxes if b).split())
    assert x1 > x0 and y1 > y0


@pytest.mark.slow
def test_two_processes_through_lightning(checkpoint: Path, inputs: Path, tmp_path: Path) -> None:
    """Lightning's Trainer.predict on 2 CPU processes: each rank writes a shard, rank 0 merges them."""
    out = tmp_path / "ddp.csv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable,
        "-m",
        "mfclip.cli.main",
        "predict",
        "-c",
        str(checkpoint),
        str(inputs / "real"),
    ]
    command += [
        "--out",
        str(out),
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stderr and "wrote 7 rows" in result.stderr
    rows = read_csv(out)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(
        ["img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "photo.jpg", "cut.jpg"]
    )
    assert not list(tmp_path.glob("ddp.part-*"))
    single = tmp_path / "single.csv"
    assert cli("predict", "-c", checkpoint, inputs / "real", "--out", single, "--no-progress") == 0
    expected = {r["path"]: r["p_fake"] for r in read_csv(single)}
    assert {r["path"]: r["p_fake"] for r in rows} == expected


def test_resume_takes_over_the_shards_of_an_interrupted_multi_device_run(
    detector: Detector, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    images = sorted((inputs / "real").glob("img*.png"))
    predict_files(detector, images[:1], out, PredictOptions(progress=False))
    # What two ranks had written when the job stopped: one shard complete, one cut mid-row.
    for rank, share in ((0, images[1:3]), (1, images[3:4])):
        predict_files(detector, share, tmp_path / "rank.csv", PredictOptions(progress=False, overwrite=True))
        (tmp_path / "rank.csv").rename(tmp_path / f"scores.part-{rank}.csv")
    with open(tmp_path / "scores.part-1.csv", "a", encoding="utf-8") as handle:
        handle.write(f"{images[4]},0.3")
    summary = predict_files(detector, images, out, PredictOptions(progress=False, resume=True))
    assert (summary.skipped, summary.written) == (4, 1)
    assert sorted(r["path"] for r in read_csv(out)) == sorted(str(p) for p in images)
    assert not list(tmp_path.glob("scores.part-*"))
