"""Celeb-DF (v2, and v1 which shares the layout).

Layout of the release, and of DeepfakeBench's input (videos moved into ``videos/``) and output::

    <root>/Celeb-real/id0_0000.mp4          real (celebrities)   or <root>/Celeb-real/videos/id0_0000.mp4
    <root>/YouTube-real/00000.mp4           real (YouTube)
    <root>/Celeb-synthesis/id0_id1_0000.mp4 fake (face swap)
    <root>/List_of_testing_videos.txt       lines "<1 real|0 fake> <folder>/<video>.mp4": the test split
    <root>/<folder>/frames/<video>/000.png  frames (DeepfakeBench writes them only where it found a face)
    <root>/<folder>/landmarks/, masks/      not samples (listed as skipped)

Frames may also sit in ``<folder>/<video>/*.png`` (other extraction tools). Each video is imported as its
frames where it has some, else as its video file (``media="auto"``). Videos in the test list are
``test``; all others ``train`` (Celeb-DF defines no validation split); a test-list entry with neither
frames nor a video on disk is listed as skipped. ``video_id`` is ``<folder>/<video>``.
"""

from __future__ import annotations

from pathlib import Path

from mfclip.data.importers.base import (
    ImporterError,
    ImportResult,
    Progress,
    RowBuilder,
    register_importer,
    relative,
)
from mfclip.data.importers.media import (
    NON_SAMPLE_FOLDERS,
    VIDEO_FOLDER,
    Media,
    add_videos,
    check_media,
    frame_folder,
    video_files,
)

FOLDERS = {"celeb-real": 0, "youtube-real": 0, "celeb-synthesis": 1}
TEST_LIST = "List_of_testing_videos.txt"
#: Celeb-DF's fakes are face swaps (the DeepfakeBench importer uses this too).
FORGERY_TYPE = "face_swap"


def scan_class_folder(
    folder: Path,
    builder: RowBuilder,
    counter: Progress,
    media: Media,
    video_prefix: str,
    **row: object,
) -> set[str]:
    """Rows for one class folder (``Celeb-real`` ...); returns the ids of the videos found in it."""
    root = builder.result.root
    videos_dir = builder.find_child(folder, VIDEO_FOLDER)
    frames_dir = frame_folder(folder, builder)
    videos = video_files(builder.child_files(folder), builder)
    if videos_dir is not None:
        for video_id, path in video_files(list(builder.walk_files(videos_dir, None)), builder).items():
            if video_id in videos:
                builder.skip_path(path, f"same video as {relative(videos[video_id], root)}, imported")
            else:
                videos[video_id] = path
    frame_dirs: dict[str, Path] = {}
    if frames_dir is not None:
        frame_dirs = {d.name: d for d in builder.child_dirs(frames_dir)}
        for path in builder.child_files(frames_dir):
            builder.skip_path(path, "file directly under frames/ (expected frames/<video>/...)")
    for child in builder.child_dirs(folder):
        if child in (videos_dir, frames_dir):
            continue
        what = NON_SAMPLE_FOLDERS.get(child.name.lower())
        if what is not None:
            builder.skip_path(child, f"folder ignored ({what})")
        elif child.name in frame_dirs:
            builder.skip_path(child, f"frames of video {child.name} are also in frames/; those are imported")
        else:  # <folder>/<video>/ frames
            frame_dirs[child.name] = child
    if media == "videos" and frame_dirs:
        for directory in [frames_dir] if frames_dir is not None else list(frame_dirs.values()):
            builder.skip_path(directory, "frames not imported (--media videos)")
    if videos_dir is not None:
        note = (relative(videos_dir, root) + "/", "videos")
    else:
        note = (relative(folder, root) + "/*.mp4", "videos")
    usable_frames = frame_dirs if media != "videos" else {}
    add_videos(builder, counter, media, videos, usable_frames, video_prefix, note, **row)
    return set(videos) | set(frame_dirs)


def read_test_list(path: Path, builder: RowBuilder) -> dict[str, str]:
    """Lower-cased ``<folder>/<video stem>`` → as written, for every video in Celeb-DF's test list."""
    entries: dict[str, str] = {}
    try:
        # utf-8-sig: the byte-order mark Windows editors write would otherwise hide the first entry.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImporterError(f"{path}: cannot read the test list ({exc})") from None
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
            builder.warn(
                f"{path.name} line {number}: expected '<0|1> <folder>/<video>.mp4', got {line.strip()!r}"
            )
            continue
        folder, name = parts[1].replace("\\", "/").rsplit("/", 1)
        key = f"{folder}/{name.rsplit('.', 1)[0]}"
        entries[key.lower()] = key
    return entries


@register_importer(
    "celebdf", "Celeb-DF v2: Celeb-real, YouTube-real, Celeb-synthesis; test list", options=("media",)
)
def import_celebdf(
    root: Path,
    *,
    media: Media = "auto",
    dataset_name: str | None = None,
    prompt_set: str = "default",
    progress: bool = False,
) -> ImportResult:
    check_media(media)
    builder = RowBuilder(dataset_name or "celebdf", root)
    folders = [(d, FOLDERS[d.name.lower()]) for d in builder.child_dirs(root) if d.name.lower() in FOLDERS]
    if not folders:
        raise ImporterError(f"no Celeb-real/, YouTube-real/ or Celeb-synthesis/ folder under {root}")
    for child in builder.child_dirs(root):
        if child.name.lower() not in FOLDERS:
            builder.skip_path(child, "unknown folder (expected Celeb-real, YouTube-real, Celeb-synthesis)")
    test_list = next((p for p in builder.child_files(root) if p.name.lower() == TEST_LIST.lower()), None)
    for path in builder.child_files(root):
        if path != test_list:
            builder.skip_path(path, "unexpected file at the dataset root")
    test = read_test_list(test_list, builder) if test_list is not None else {}
    if test_list is None:
        builder.result.split_hint = f"{TEST_LIST} not found in {root}"
    counter = Progress(progress, "scanning Celeb-DF")
    found: set[str] = set()
    try:
        for folder, label in folders:
            present = scan_class_folder(
                folder,
                builder,
                counter,
                media,
                video_prefix=f"{folder.name}/",
                label=label,
                forgery_type=FORGERY_TYPE if label else "",
            )
            found.update(f"{folder.name}/{video}".lower() for video in present)
    finally:
        counter.close()
    if test_list is not None:
        for row in builder.result.rows:
            row["split"] = "test" if row["video_id"].lower() in test else "train"
        missing = sorted(test[key] for key in set(test) - found)
        for entry in missing:
            builder.skip(f"{entry}.mp4", f"in {TEST_LIST}, but neither its frames nor its video file is here")
        if missing:
            builder.warn(
                f"{len(missing)} videos in {TEST_LIST} were not found (e.g. {missing[0]}); "
                "they are listed in the skipped files"
            )
    return builder.result
