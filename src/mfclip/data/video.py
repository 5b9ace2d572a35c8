"""Video decoding with OpenCV: metadata and uniformly spaced frame sampling.

Container metadata is often wrong (truncated downloads, variable frame rate, broken indexes), so
:func:`sample_frames` trusts the reported frame count only as a first guess: when the video ends early or
a seek fails, it counts the frames that really decode and samples again from those.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")

# Above this many frames between two samples, seeking is cheaper than decoding every frame in between.
DEFAULT_SEEK_STRIDE = 16


class VideoDecodeError(ValueError):
    """A video could not be opened or yielded no frames; ``source`` names it and ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def is_video_path(path: str | Path) -> bool:
    """Whether ``path`` has a known video file extension."""
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def _open(path: str | Path):  # -> cv2.VideoCapture
    # FFmpeg's own messages ("moov atom not found") would duplicate our one-line error; read before the
    # first capture opens, so a value the user set still wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    label = str(path)
    file = Path(path)
    if not file.exists():
        raise VideoDecodeError(label, "file not found")
    if file.is_dir():
        raise VideoDecodeError(label, "is a directory, not a video")
    if file.stat().st_size == 0:
        raise VideoDecodeError(label, "empty file (0 bytes)")
    capture = cv2.VideoCapture(str(file))
    if not capture.isOpened():
        capture.release()
        raise VideoDecodeError(label, "cannot be opened as a video (unknown format or corrupt container)")
    return capture


def read_video_info(path: str | Path) -> tuple[int, float, int, int]:
    """``(frame_count, fps, width, height)`` as the container reports them (the count may be wrong or 0)."""
    import cv2

    capture = _open(path)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    return max(count, 0), fps, width, height


def uniform_indices(frame_count: int, num_frames: int) -> list[int]:
    """``num_frames`` frame indices spread evenly over ``[0, frame_count)``, first and last included;
    every frame when the video has no more than ``num_frames``."""
    if frame_count <= 0 or num_frames <= 0:
        return []
    if num_frames >= frame_count:
        return list(range(frame_count))
    if num_frames == 1:
        return [(frame_count - 1) // 2]
    return sorted({round(float(i)) for i in np.linspace(0, frame_count - 1, num_frames)})


def sample_frames(
    path: str | Path, num_frames: int, seek_stride: int = DEFAULT_SEEK_STRIDE
) -> list[tuple[int, np.ndarray]]:
    """Decode ``num_frames`` uniformly spaced frames as ``(frame_index, HxWx3 uint8 RGB)`` pairs.

    Every frame is returned when the video is shorter than ``num_frames``. Sparse samples (more than
    ``seek_stride`` frames apart) are read by seeking, dense ones by decoding sequentially. Raises
    :class:`VideoDecodeError` naming the file when it cannot be opened or no frame decodes.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    import cv2

    capture = _open(path)
    try:
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        frames: list[tuple[int, np.ndarray]] | None = None
        if reported > 0:
            indices = uniform_indices(reported, num_frames)
            stride = reported / max(len(indices), 1)
            if stride > seek_stride:
                frames = _read_by_seeking(capture, indices)
                if frames is not None:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, reported)
            else:
                frames = _read_sequentially(capture, indices)
                if frames is not None:
                    _skip(capture, reported - 1 - indices[-1])
            if frames is not None and capture.grab():
                frames = None  # more frames than reported: the samples would not be uniform
        if frames is None:
            # The reported count was missing or wrong: count the frames that really decode, then sample.
            capture.release()
            capture = _open(path)
            true_count = _count_frames(capture)
            if true_count == 0:
                raise VideoDecodeError(str(path), "no decodable frames")
            capture.release()
            capture = _open(path)
            frames = _read_sequentially(capture, uniform_indices(true_count, num_frames))
            if not frames:
                raise VideoDecodeError(str(path), "no decodable frames")
    finally:
        capture.release()
    return [(index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) for index, frame in frames]


def _read_sequentially(capture, indices: Sequence[int]) -> list[tuple[int, np.ndarray]] | None:
    """Decode from the current position (frame 0); ``None`` when the video ends before the last index."""
    wanted = set(indices)
    last = max(indices) if indices else -1
    frames: list[tuple[int, np.ndarray]] = []
    for index in range(last + 1):
        if not capture.grab():
            return None
        if index in wanted:
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                return None
            frames.append((index, frame))
    return frames


def _read_by_seeking(capture, indices: Sequence[int]) -> list[tuple[int, np.ndarray]] | None:
    import cv2

    frames: list[tuple[int, np.ndarray]] = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok or frame is None:
            return None
        frames.append((index, frame))
    return frames


def _skip(capture, count: int) -> None:
    for _ in range(count):
        if not capture.grab():
            return


def _count_frames(capture) -> int:
    count = 0
    while capture.grab():
        count += 1
    return count
