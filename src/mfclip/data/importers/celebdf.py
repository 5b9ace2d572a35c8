"""Celeb-DF (v2, and v1 which shares the layout).

Layout::

    <root>/Celeb-real/id0_0000.mp4          real (celebrities)
    <root>/YouTube-real/00000.mp4           real (YouTube)
    <root>/Celeb-synthesis/id0_id1_0000.mp4 fake (face swap)
    <root>/List_of_testing_videos.txt       lines "<1 real|0 fake> <folder>/<video>.mp4": the test split

Extracted frames may sit in ``<folder>/frames/<video>/*.png`` (DeepfakeBench) or ``<folder>/<video>/*.png``.
Videos in the test list are ``test``; all others ``train`` (Celeb-DF defines no validation split).
``video_id`` is ``<folder>/<video>``.
"""

from __future__ import annotations

from pathlib import Path

from mfclip.data.importers.base import (
    ImporterError,
    ImportResult,
    Progress,
    RowBuilder,
    file_kind,
    register_importer,
    relative,
)
from mfclip.data.importers.ffpp import FRAME_FOLDERS, Media, check_media

FOLDERS = {"celeb-real": 0, "youtube-real": 0, "celeb-synthesis": 1}
TEST_LIST = "List_of_testing_videos.txt"


def scan_video_folder(
    folder: Path,
    root: Path,
    builder: RowBuilder,
    counter: Progress,
    media: Media,
    video_prefix: str,
    **row: object,
) -> None:
    """Rows for a folder of videos (``*.mp4``) and/or frame folders (``frames/<video>/`` or ``<video>/``)."""
    frame_root = next(
        (f for f in (builder.find_child(folder, n) for n in FRAME_FOLDERS) if f is not None), None
    )
    frame_dirs = builder.child_dirs(frame_root) if frame_root is not None else []
    frame_dirs += [d for d in builder.child_dirs(folder) if d != frame_root]
    videos = [p for p in builder.child_files(folder) if file_kind(p.name) == "video"]
    use_frames = media == "frames" or (media == "auto" and bool(frame_dirs))
    for path in builder.child_files(folder):
        if file_kind(path.name) != "video":
            builder.skip(relative(path, root), "not a video file")
    if use_frames:
        if videos:
            builder.skip(relative(folder, root) + "/*.mp4", f"{len(videos)} videos not imported: frames are")
        if frame_root is not None:
            for path in builder.child_files(frame_root):
                builder.skip(
                    relative(path, root), "file directly under frames/ (expected frames/<video>/...)"
                )
        for video_dir in frame_dirs:
            for path in builder.walk_files(video_dir, counter):
                rel = relative(path, root)
                if file_kind(path.name) != "image":
                    builder.skip(rel, "not an image file")
                    continue
                builder.add(rel, video_id=f"{video_prefix}{video_dir.name}", **row)  # type: ignore[arg-type]
    else:
        for directory in frame_dirs:
            builder.skip(relative(directory, root) + "/", "frames not imported (media=videos)")
        for path in videos:
            counter.update()
            builder.add(relative(path, root), video_id=f"{video_prefix}{path.stem}", **row)  # type: ignore[arg-type]


def read_test_list(path: Path, builder: RowBuilder) -> dict[str, str]:
    """Lower-cased ``<folder>/<video stem>`` → as written, for every video in Celeb-DF's test list."""
    entries: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
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
            builder.skip(
                relative(child, root) + "/",
                "unknown folder (expected Celeb-real, YouTube-real, Celeb-synthesis)",
            )
    test_list = next((p for p in builder.child_files(root) if p.name.lower() == TEST_LIST.lower()), None)
    for path in builder.child_files(root):
        if path != test_list:
            builder.skip(relative(path, root), "unexpected file at the dataset root")
    test = read_test_list(test_list, builder) if test_list is not None else {}
    if test_list is None:
        builder.result.split_hint = f"{TEST_LIST} not found in {root}"
    counter = Progress(progress, "scanning Celeb-DF")
    try:
        for folder, label in folders:
            scan_video_folder(
                folder,
                root,
                builder,
                counter,
                media,
                video_prefix=f"{folder.name}/",
                label=label,
                forgery_type="face_swap" if label else "",
            )
    finally:
        counter.close()
    if test_list is not None:
        found: set[str] = set()
        for row in builder.result.rows:
            key = row["video_id"].lower()
            row["split"] = "test" if key in test else "train"
            found.add(key)
        missing = sorted(test[key] for key in set(test) - found)
        if missing:
            builder.warn(f"{len(missing)} videos in {TEST_LIST} were not found (e.g. {missing[0]})")
    return builder.result
