"""Video datasets (FaceForensics++, DFD, Celeb-DF, DFDC): one row per video, or per extracted frame.

Frames extracted from a video sit in ``frames/<video>/`` (DeepfakeBench's preprocessing) or
``images/<video>/`` (FaceForensics++'s extraction script). They are rarely there for every video:
DeepfakeBench writes a video's frame folder only when it finds a face in it. So the choice is made per
video: with ``media="auto"`` a video whose frame folder holds images is imported as those frames, any
other as its video file, and a video with neither is listed as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from mfclip.data.importers.base import ImporterError, Progress, RowBuilder, file_kind, relative

Media = Literal["auto", "videos", "frames"]
FRAME_FOLDERS = ("frames", "images")
VIDEO_FOLDER = "videos"
#: Folders beside the videos and frames that hold no samples, and what they hold.
NON_SAMPLE_FOLDERS = {
    "masks": "manipulation masks, not samples",
    "mask": "manipulation masks, not samples",
    "landmarks": "face landmarks, not samples",
    "models": "manipulation models, not samples",
}


def check_media(media: str) -> None:
    if media not in ("auto", "videos", "frames"):
        raise ImporterError(f"media must be auto, videos or frames, got {media!r}")


def frame_folder(directory: Path, builder: RowBuilder) -> Path | None:
    """The ``frames/`` (or ``images/``) folder of ``directory``, if any."""
    for name in FRAME_FOLDERS:
        found = builder.find_child(directory, name)
        if found is not None:
            return found
    return None


def video_files(paths: list[Path], builder: RowBuilder, reason: str = "not a video file") -> dict[str, Path]:
    """Video id (file stem) → path of the video files among ``paths``; other files are skipped."""
    videos = {}
    for path in paths:
        if file_kind(path.name) == "video":
            videos[path.stem] = path
        else:
            builder.skip_path(path, reason)
    return videos


def add_videos(
    builder: RowBuilder,
    counter: Progress,
    media: Media,
    videos: Mapping[str, Path],
    frame_dirs: Mapping[str, Path],
    video_prefix: str,
    replaced_note: tuple[str, str] | None = None,
    **row: Any,
) -> set[str]:
    """Rows for the videos of one folder: per video its frames or its video file (see the module doc).

    ``videos`` and ``frame_dirs`` map a video id to its file and to its frame folder. ``video_prefix`` +
    the id is the ``video_id``. ``replaced_note`` is ``(path, what)`` for the one skipped-list line that
    says how many videos were imported as frames instead (``what`` names those videos, e.g. ``videos/``).
    Returns the ids of the videos that gave rows.
    """
    root = builder.result.root
    imported: set[str] = set()
    replaced = 0
    for video_id in sorted(set(videos) | set(frame_dirs)):
        video, frames = videos.get(video_id), frame_dirs.get(video_id)
        fields = {**row, "video_id": f"{video_prefix}{video_id}"}
        images: list[Path] = []
        if frames is not None and media != "videos":
            for path in builder.walk_files(frames, counter):
                if file_kind(path.name) == "image":
                    images.append(path)
                else:
                    builder.skip_path(path, "not an image file")
        if images:
            for path in images:
                builder.add(relative(path, root), **fields)
            imported.add(video_id)
            replaced += video is not None
            continue
        if media == "frames":
            where = video if video is not None else frames
            assert where is not None
            builder.skip_path(where, "no extracted frames for this video (--media frames)")
            continue
        if frames is not None and media == "auto":
            if video is None:
                builder.skip_path(frames, f"no frames in this folder and no video file for video {video_id}")
                continue
            builder.skip_path(frames, "no frames in this folder; the video file is imported instead")
        if video is not None:
            counter.update()
            builder.add(relative(video, root), **fields)
            imported.add(video_id)
    if replaced and replaced_note is not None:
        path, what = replaced_note
        builder.skip(path, f"{replaced} of {len(videos)} {what} not imported: their extracted frames are")
    return imported
