"""The preprocess pipeline and the ``mfclip preprocess`` command on a small tree of real photos and videos."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mfclip.face import FaceBox, FaceDetector, PreprocessConfig, PreprocessError, preprocess
from mfclip.face.pipeline import FACE_MANIFEST_COLUMNS, Source, process_source
from mfclip.utils.jobs import JobLock, JobLockedError, SettingsChangedError

SIZE = 48


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """MTCNN's small convolutions gain nothing from intra-op threads, and lose much on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v") -> Path:
    height, width = frames[0].shape[:2] if frames else (64, 64)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def small_astronaut(astronaut_rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(astronaut_rgb, (160, 160), interpolation=cv2.INTER_AREA)


@pytest.fixture
def tree(tmp_path: Path, small_astronaut: np.ndarray, grace_hopper_path: Path) -> Path:
    """real/ (two photos, a moving-face video), other/ (no face, corrupt, frameless and faceless videos),
    and an empty folder."""
    root = tmp_path / "data"
    (root / "real" / "videos").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "empty").mkdir()
    Image.fromarray(small_astronaut).save(root / "real" / "astronaut.png")
    Image.open(grace_hopper_path).convert("RGB").resize((128, 150)).save(root / "real" / "grace hopper.jpg")
    write_video(
        root / "real" / "videos" / "talk.mp4", [np.roll(small_astronaut, 4 * i, axis=1) for i in range(8)]
    )
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(root / "other" / "grey.png")
    (root / "other" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "other" / "notes.txt").write_text("ignored: not an image or video")
    write_video(root / "other" / "frameless.avi", [], "MJPG")
    gradient = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    write_video(root / "other" / "sky.avi", [np.roll(gradient, i, axis=1) for i in range(6)], "MJPG")
    return root


def config(**overrides) -> PreprocessConfig:
    values = {"workers": 1, "size": SIZE, "frames": 3, "progress": False}
    return PreprocessConfig(**(values | overrides))


def test_images_and_videos_to_crops_manifest_and_skipped(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = preprocess([tree], out, config(labels={"label": "real", "dataset": "photos", "split": "test"}))
    assert (result.sources, result.processed, result.resumed, result.failed) == (7, 7, 0, 0)
    assert result.written == result.faces == 5
    assert result.skipped == 5  # grey, broken, frameless, sky, empty folder
    assert (result.no_face, result.unreadable, result.failed, result.folders) == (2, 2, 0, 1)

    rows = read_csv(out / "manifest.csv")
    assert list(rows[0]) == list(FACE_MANIFEST_COLUMNS)
    by_source = {}
    for row in rows:
        by_source.setdefault(Path(row["source"]).name, []).append(row)
    assert sorted(by_source) == ["astronaut.png", "grace hopper.jpg", "talk.mp4"]
    video = by_source["talk.mp4"]
    assert [int(r["frame"]) for r in video] == [0, 4, 7]
    assert {r["video_id"] for r in video} == {str(tree / "real" / "videos" / "talk.mp4")}
    # The face moves right by 4 px per frame; so do the boxes.
    x0 = [float(r["box_x0"]) for r in video]
    assert x0[1] - x0[0] == pytest.approx(16, abs=3) and x0[2] - x0[1] == pytest.approx(12, abs=3)
    for row in rows:
        assert (row["label"], row["dataset"], row["split"], row["face_index"]) == ("0", "photos", "test", "0")
        assert float(row["score"]) > 0.9
        crop = out / row["path"]
        assert not Path(row["path"]).is_absolute() and crop.is_file()
        assert Image.open(crop).size == (SIZE, SIZE)
    image_rows = by_source["astronaut.png"] + by_source["grace hopper.jpg"]
    assert all(r["frame"] == "" and r["video_id"] == "" for r in image_rows)
    # Output names: a hash of the source path, then its stem (made file-name safe).
    assert Path(by_source["grace hopper.jpg"][0]["path"]).name.endswith("_grace_hopper_0.png")

    skipped = {Path(r["source"]).name: r for r in read_csv(out / "skipped.csv")}
    assert sorted(skipped) == ["broken.jpg", "empty", "frameless.avi", "grey.png", "sky.avi"]
    assert skipped["grey.png"]["reason"] == "no face detected"
    assert skipped["broken.jpg"]["reason"].startswith("unreadable image")
    assert skipped["frameless.avi"]["reason"] == "unreadable video: no decodable frames"
    assert skipped["sky.avi"]["reason"] == "no face detected in 3 sampled frames"
    assert (skipped["empty"]["kind"], skipped["empty"]["reason"]) == (
        "folder",
        "folder holds no images or videos",
    )


def test_rerun_resumes_and_writes_nothing(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = preprocess([tree / "real", tree / "other"], out, config())
    manifest = (out / "manifest.csv").read_bytes()
    skipped = (out / "skipped.csv").read_bytes()
    crops = {p: p.stat().st_mtime_ns for p in (out / "faces").rglob("*.png")}
    assert len(crops) == first.faces == 5

    again = preprocess([tree / "real", tree / "other"], out, config())
    assert (again.processed, again.written, again.resumed) == (0, 0, first.sources)
    assert (out / "manifest.csv").read_bytes() == manifest
    assert (out / "skipped.csv").read_bytes() == skipped
    assert {p: p.stat().st_mtime_ns for p in (out / "faces").rglob("*.png")} == crops

    # A lost crop and a crash mid-write of the log: only the affected source is redone.
    lost = next(p for p in crops if "astronaut" in p.name)
    lost.unlink()
    with (out / "progress.jsonl").open("a") as log:
        log.write('{"key": "cut sho')
    third = preprocess([tree / "real", tree / "other"], out, config())
    assert (third.processed, third.written) == (1, 1)
    assert lost.is_file()
    assert (out / "manifest.csv").read_bytes() == manifest


def test_labels_change_without_reprocessing_and_settings_are_guarded(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    preprocess([tree / "real"], out, config(labels={"label": "fake", "generator": "SDXL"}))
    relabelled = preprocess([tree / "real"], out, config(labels={"label": "real"}))
    assert (relabelled.processed, relabelled.written) == (0, 0)
    rows = read_csv(out / "manifest.csv")
    assert {(r["label"], r["generator"]) for r in rows} == {("0", "")}
    with pytest.raises(SettingsChangedError, match=r"other settings \(size: 48 -> 64\)"):
        preprocess([tree / "real"], out, config(size=64))


def test_detector_none_is_a_centre_crop(tmp_path: Path, small_astronaut: np.ndarray) -> None:
    image = small_astronaut[:120, :].copy()  # 160 wide, 120 high
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "aligned.png")
    out = tmp_path / "out"
    result = preprocess([tmp_path / "in"], out, config(detector="none"))
    (row,) = read_csv(out / "manifest.csv")
    assert result.faces == 1
    assert [float(row[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1")] == [20, 0, 140, 120]
    expected = cv2.resize(image[:, 20:140], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(np.asarray(Image.open(out / row["path"])), expected)


def test_all_faces_aligned_as_jpeg(
    tmp_path: Path, small_astronaut: np.ndarray, grace_hopper_path: Path
) -> None:
    hopper = np.asarray(Image.open(grace_hopper_path).convert("RGB").resize((100, 118)))
    both = np.zeros((160, 260, 3), np.uint8)
    both[:, :160] = small_astronaut
    both[20:138, 160:] = hopper
    (tmp_path / "in").mkdir()
    Image.fromarray(both).save(tmp_path / "in" / "two.png")
    out = tmp_path / "out"
    result = preprocess(
        [tmp_path / "in" / "two.png"], out, config(faces="all", align="deepfakebench", format="jpg")
    )
    rows = read_csv(out / "manifest.csv")
    assert result.faces == 2
    assert [r["face_index"] for r in rows] == ["0", "1"]
    areas = [
        (float(r["box_x1"]) - float(r["box_x0"])) * (float(r["box_y1"]) - float(r["box_y0"])) for r in rows
    ]
    assert areas[0] >= areas[1]
    assert float(rows[0]["box_x0"]) > 160  # Grace Hopper's face is the larger one
    for row in rows:
        assert row["path"].endswith(".jpg")
        assert Image.open(out / row["path"]).size == (SIZE, SIZE)


def test_manifest_input_keeps_labels(tree: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "import.csv"
    manifest.write_text(
        "path,label,dataset,generator,subset\n"
        "real/astronaut.png,0,DiFF,,val\n"
        "real/videos/talk.mp4,fake,,Midjourney,t2i\n"
        "real/missing.png,1,DiFF,SDXL,t2i\n"
    )
    out = tmp_path / "out"
    result = preprocess(
        [], out, config(detector="haar", labels={"dataset": "fallback"}), manifest=manifest, root=tree
    )
    assert result.sources == 3 and result.skipped == 1
    rows = read_csv(out / "manifest.csv")
    assert list(rows[0])[-1] == "subset"
    image = next(r for r in rows if r["source"] == "real/astronaut.png")
    assert (image["label"], image["dataset"], image["subset"]) == ("0", "DiFF", "val")
    video = [r for r in rows if r["source"] == "real/videos/talk.mp4"]
    assert len(video) == 3
    assert {(r["label"], r["dataset"], r["generator"], r["video_id"]) for r in video} == {
        ("1", "fallback", "Midjourney", "real/videos/talk.mp4")
    }
    (missing,) = read_csv(out / "skipped.csv")
    assert (missing["source"], missing["reason"]) == ("real/missing.png", "file not found")

    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.png,0\n")
    with pytest.raises(PreprocessError, match=r"bad\.csv: no 'path' column"):
        preprocess([], tmp_path / "out2", config(), manifest=bad)
    bad.write_text("path,label\na.png,maybe\n")
    with pytest.raises(PreprocessError, match=r"bad\.csv: invalid input manifest.*\n  row 2, column 'label'"):
        preprocess([], tmp_path / "out2", config(), manifest=bad)


def test_manifest_input_is_validated_like_a_manifest(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mfclip.cli.errors import run_app
    from mfclip.cli.main import app

    manifest = tmp_path / "input.csv"
    manifest.write_text(
        "path,label,split\n"
        "real/astronaut.png,real,train\n"
        "../outside.png,1,train\n"
        "/abs/x.png,1,train\n"
        "real/./astronaut.png,1,test\n"
        "real/grace hopper.jpg,maybe,train\n"
        "real/videos/talk.mp4,fake,tst\n"
        "real/x.png,0,train,extra\n"
        "other/grey.png,,\n"  # unknown label and split: allowed
    )
    out = tmp_path / "out"
    with pytest.raises(PreprocessError) as refused:
        preprocess([], out, config(detector="none"), manifest=manifest, root=tree)
    message = str(refused.value)
    assert message.startswith(f"{manifest}: invalid input manifest, 6 problem(s) in 6 row(s):")
    for expected in (
        "row 3, column 'path': path '../outside.png' escapes the dataset root",
        "row 4, column 'path': absolute path '/abs/x.png'",
        "row 5, column 'path': duplicate path 'real/./astronaut.png' (first at row 2)",
        "row 6, column 'label'",
        "row 7, column 'split'",
        "row 8: 4 fields, but the header has 3",
    ):
        assert expected in message
    assert "--drop-invalid" in message and not out.exists()

    argv = ["preprocess", "--manifest", str(manifest), "--root", str(tree), "--out", str(out)]
    argv += ["--detector", "none", "--size", "16", "--workers", "1", "--no-progress", "--drop-invalid"]
    assert run_app(app, argv) == 0
    printed = capsys.readouterr().out
    assert f"dropped 6 rows of {manifest} with problems" in printed
    assert "2 input files: 2 processed" in printed
    assert sorted(r["source"] for r in read_csv(out / "manifest.csv")) == [
        "other/grey.png",
        "real/astronaut.png",
    ]


def test_unusable_names_and_folders_are_reported_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from data_trees import NON_UTF8_DISPLAY, write_non_utf8_image
    from mfclip.cli.errors import run_app
    from mfclip.cli.main import app

    root = tmp_path / "data"
    (root / "empty").mkdir(parents=True)
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "ok.png")
    write_non_utf8_image(root)
    (root / "locked").mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "locked" / "hidden.png")
    locked = str(root / "locked")
    real_scandir = os.scandir

    def scandir(path: str):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    argv = ["preprocess", str(root), "--out", str(out), "--detector", "none", "--size", "16"]
    assert run_app(app, [*argv, "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (
        "2 input files: 2 processed, 0 already done; 0 with no face, 1 unreadable, 0 failed; "
        "2 folders skipped (empty or unreadable); 1 crops written"
    ) in printed
    skipped = {Path(r["source"]).name: (r["kind"], r["reason"]) for r in read_csv(out / "skipped.csv")}
    assert skipped == {
        NON_UTF8_DISPLAY: ("image", "file name is not valid UTF-8"),
        "empty": ("folder", "folder holds no images or videos"),
        "locked": ("folder", "cannot list folder (Permission denied)"),
    }
    assert [Path(r["source"]).name for r in read_csv(out / "manifest.csv")] == ["ok.png"]


def test_input_errors(tmp_path: Path) -> None:
    with pytest.raises(PreprocessError, match="does-not-exist: input not found"):
        preprocess([tmp_path / "does-not-exist"], tmp_path / "out", config())
    with pytest.raises(PreprocessError, match="nothing to preprocess"):
        preprocess([], tmp_path / "out", config())
    with pytest.raises(ValueError, match="needs facial landmarks"):
        config(detector="haar", align="deepfakebench")
    with pytest.raises(ValueError, match="did you mean 'workers'"):
        PreprocessConfig.from_dict({"worker": 2})


def test_output_folder_inside_the_input_is_not_reprocessed(tree: Path) -> None:
    out = tree / "real" / "faces-out"
    first = preprocess([tree / "real"], out, config(detector="haar"))
    second = preprocess([tree / "real"], out, config(detector="haar"))
    assert first.sources == second.sources == 3
    assert second.processed == 0


class _BrokenDetector(FaceDetector):
    name = "broken"

    def _detect(self, rgb: np.ndarray) -> list[FaceBox]:
        raise RuntimeError("detector exploded")


def test_unexpected_errors_are_recorded_and_retried(tree: Path, tmp_path: Path) -> None:
    photo = tree / "real" / "astronaut.png"
    source = Source(photo.resolve(), str(photo), "image", {})
    record, written = process_source(source, config(), _BrokenDetector(), tmp_path)
    assert (record["status"], written, record["faces"]) == ("failed", 0, [])
    assert "detector exploded" in record["reason"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "progress.jsonl").write_text(json.dumps(record) + "\n")
    (out / "preprocess.json").write_text(json.dumps({"settings": config(detector="haar").output_settings()}))
    result = preprocess([photo], out, config(detector="haar"))
    assert (result.processed, result.failed, result.faces) == (1, 0, 1)


def test_cli_with_two_workers(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mfclip.cli.errors import run_app
    from mfclip.cli.main import app

    out = tmp_path / "out"
    argv = ["preprocess", str(tree / "real"), "-i", str(tree / "other" / "grey.png"), "--out", str(out)]
    argv += ["--detector", "haar", "--size", "32", "--frames", "2", "--workers", "2", "--label", "fake"]
    assert run_app(app, [*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "4 input files: 4 processed, 0 already done; 1 with no face, 0 unreadable, 0 failed;" in printed
    assert "manifest:" in printed
    rows = read_csv(out / "manifest.csv")
    assert len(rows) == 4 and {r["label"] for r in rows} == {"1"}
    assert [Path(r["source"]).name for r in read_csv(out / "skipped.csv")] == ["grey.png"]

    assert run_app(app, [*argv, "--no-progress"]) == 0
    assert "0 processed, 4 already done" in capsys.readouterr().out
    assert run_app(app, ["preprocess", str(tree), "--out", str(out), "--faces", "some"]) == 2
    assert "faces" in capsys.readouterr().err


def test_one_run_per_output_folder(tree: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    photo = [tree / "real" / "astronaut.png"]
    holder = JobLock(out / ".lock", "preprocess", out).acquire()  # another run works on the folder
    with pytest.raises(
        JobLockedError, match=rf"{out} is in use by another preprocess run \(process {os.getpid()}"
    ):
        preprocess(photo, out, config(detector="none"))
    holder.release()
    # The pid-only lock file of an older release: a live process holds the folder, a finished one not.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as sleeper:
        (out / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(JobLockedError, match=f"process {sleeper.pid}"):
            preprocess(photo, out, config(detector="none"))
        sleeper.kill()
    assert preprocess(photo, out, config(detector="none")).faces == 1
    assert not (out / ".lock").exists()
