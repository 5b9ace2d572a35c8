"""Video metadata and uniform frame sampling on small videos written by the tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mfclip.data.video import (
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    is_video_path,
    read_video_info,
    sample_frames,
    uniform_indices,
)


def moving_frames(photo: np.ndarray, count: int, size: int = 96, step: int = 3) -> list[np.ndarray]:
    """``count`` RGB frames of ``photo`` shifted ``step`` pixels further right in each frame."""
    small = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
    return [np.roll(small, step * i, axis=1) for i in range(count)]


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v", fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2] if frames else (64, 64)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} video"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decode_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.fixture(scope="module")
def photo_frames(astronaut_rgb: np.ndarray) -> list[np.ndarray]:
    return moving_frames(astronaut_rgb, 12)


@pytest.fixture(scope="module")
def mp4_video(tmp_path_factory: pytest.TempPathFactory, photo_frames: list[np.ndarray]) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", photo_frames, "mp4v")


def test_video_extensions() -> None:
    assert ".mp4" in VIDEO_EXTENSIONS and ".avi" in VIDEO_EXTENSIONS
    assert is_video_path("a/b/Clip.MP4")
    assert is_video_path(Path("x.mkv"))
    assert not is_video_path("face.png")


def test_read_video_info(mp4_video: Path) -> None:
    count, fps, width, height = read_video_info(mp4_video)
    assert (count, width, height) == (12, 96, 96)
    assert fps == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("count", "wanted", "expected"),
    [
        (10, 4, [0, 3, 6, 9]),
        (12, 4, [0, 4, 7, 11]),
        (3, 5, [0, 1, 2]),
        (10, 1, [4]),
        (0, 3, []),
        (5, 5, [0, 1, 2, 3, 4]),
    ],
)
def test_uniform_indices(count: int, wanted: int, expected: list[int]) -> None:
    assert uniform_indices(count, wanted) == expected


def test_sample_frames_uniform_and_rgb(mp4_video: Path, photo_frames: list[np.ndarray]) -> None:
    decoded = decode_all(mp4_video)
    sampled = sample_frames(mp4_video, 4)
    assert [index for index, _ in sampled] == [0, 4, 7, 11]
    for index, frame in sampled:
        assert frame.dtype == np.uint8 and frame.shape == (96, 96, 3)
        np.testing.assert_array_equal(frame, decoded[index])
        # RGB, not OpenCV's BGR: close to the frame that was written (lossy codec).
        assert np.abs(frame.astype(int) - photo_frames[index]).mean() < 12
        swapped = photo_frames[index][..., ::-1]
        assert (
            np.abs(frame.astype(int) - swapped).mean()
            > np.abs(frame.astype(int) - photo_frames[index]).mean()
        )


def test_sample_frames_by_seeking_matches_sequential(mp4_video: Path) -> None:
    sequential = sample_frames(mp4_video, 5, seek_stride=1000)
    seeking = sample_frames(mp4_video, 5, seek_stride=1)
    assert [i for i, _ in seeking] == [i for i, _ in sequential] == [0, 3, 6, 8, 11]
    for (_, a), (_, b) in zip(sequential, seeking, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sample_more_frames_than_the_video_has(mp4_video: Path) -> None:
    sampled = sample_frames(mp4_video, 50)
    assert [index for index, _ in sampled] == list(range(12))


@pytest.mark.parametrize("seek_stride", [1, 1000])
def test_wrong_frame_count_falls_back_to_decoding(
    tmp_path: Path, photo_frames: list[np.ndarray], seek_stride: int
) -> None:
    full = write_video(tmp_path / "full.avi", photo_frames * 2, "MJPG")  # 24 frames
    data = full.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: len(data) // 2])  # the header still says 24 frames
    reported = read_video_info(truncated)[0]
    real = len(decode_all(truncated))
    assert 0 < real < reported
    sampled = sample_frames(truncated, 4, seek_stride=seek_stride)
    assert [index for index, _ in sampled] == uniform_indices(real, 4)


def test_video_without_frames(tmp_path: Path) -> None:
    empty = write_video(tmp_path / "empty.avi", [], "MJPG")
    with pytest.raises(VideoDecodeError, match=r"empty\.avi.*no decodable frames"):
        sample_frames(empty, 4)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.mp4", b"not a video at all" * 50, "cannot be opened"),
        ("zero.mp4", b"", "empty file"),
        ("missing.mp4", None, "file not found"),
    ],
)
def test_unreadable_videos(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match=message) as caught:
        sample_frames(path, 2)
    assert name in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(VideoDecodeError):
        read_video_info(path)


def test_num_frames_must_be_positive(mp4_video: Path) -> None:
    with pytest.raises(ValueError, match="num_frames"):
        sample_frames(mp4_video, 0)
