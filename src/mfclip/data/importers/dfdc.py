"""DFDC (Deepfake Detection Challenge) and its preview release.

Every folder with an index file contributes the videos it lists::

    <root>/dfdc_train_part_0/metadata.json   {"abc.mp4": {"label": "FAKE"|"REAL", "split": "train",
                                               "original": "xyz.mp4"}, ...}
    <root>/dfdc_train_part_0/abc.mp4
    <root>/test/labels.csv                    filename,label   (label 1 = fake)
    <root>/test/videos/abc.mp4  (or <root>/test/abc.mp4)
    <root>/dataset.json                       preview release: {"method_A/.../x.mp4": {"label": "fake",
                                               "set": "train"|"test"}, ...}

Frames extracted beside the videos (``<folder>/frames/<video>/*.png``) are used instead of the video
when present (``media="auto"``). The split comes from the index entry (``split`` or ``set``), else from a
folder name (``test``, ``validation``, ``dfdc_train_part_N``). ``video_id`` is the video's path without
extension. Videos on disk that no index lists, and listed videos that are missing, are reported.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from mfclip.data.importers.base import (
    ImporterError,
    ImportResult,
    Progress,
    RowBuilder,
    file_kind,
    register_importer,
    relative,
    split_from_name,
)
from mfclip.data.importers.media import FRAME_FOLDERS, NON_SAMPLE_FOLDERS, Media, check_media
from mfclip.data.manifest import parse_label

INDEX_FILES = ("metadata.json", "dataset.json", "labels.csv")


def _folder_split(parts: list[str]) -> str:
    for part in reversed(parts):
        split = split_from_name(part)
        if split:
            return split
        if part.lower().startswith("dfdc_train_part"):
            return "train"
    return ""


def _read_index(path: Path) -> list[tuple[str, Any, str]]:
    """(video name, raw label, split text) for every entry of a metadata.json, dataset.json or labels.csv."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                fields = [f.strip().lower() for f in reader.fieldnames or []]
                if "filename" not in fields or "label" not in fields:
                    raise ImporterError(f"{path}: expected columns filename,label; found {', '.join(fields)}")
                entries: list[tuple[str, Any, str]] = []
                for record in reader:
                    fields_of = {str(k).strip().lower(): v for k, v in record.items()}
                    entries.append(
                        (str(fields_of["filename"]).strip(), fields_of["label"], fields_of.get("split", ""))
                    )
                return entries
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ImporterError(f"{path}: cannot read the index file ({exc})") from None
    if not isinstance(data, dict):
        raise ImporterError(f"{path}: expected a JSON object mapping video names to their labels")
    entries = []
    for name, info in data.items():
        if not isinstance(info, dict):
            entries.append((name, None, ""))
            continue
        split = str(info.get("split", info.get("set", "")) or "")
        entries.append((name, info.get("label"), split))
    return entries


@register_importer(
    "dfdc", "DFDC: metadata.json / labels.csv per folder (and the preview's dataset.json)", options=("media",)
)
def import_dfdc(
    root: Path,
    *,
    media: Media = "auto",
    dataset_name: str | None = None,
    prompt_set: str = "default",
    progress: bool = False,
) -> ImportResult:
    check_media(media)
    builder = RowBuilder(dataset_name or "dfdc", root)
    counter = Progress(progress, "scanning DFDC")
    indexed: dict[Path, list[Path]] = {}
    other_files: list[Path] = []
    try:
        for path in builder.walk_files(root, counter):
            if path.name.lower() in INDEX_FILES:
                indexed.setdefault(path.parent, []).append(path)
            else:
                other_files.append(path)
    finally:
        counter.close()
    if not indexed:
        raise ImporterError(f"no metadata.json, dataset.json or labels.csv found under {root}")
    used: set[Path] = set()
    for folder in sorted(indexed):
        for index in sorted(indexed[folder]):
            _import_index(index, folder, root, builder, media, used)
    for path in other_files:
        if path in used:
            continue
        kind = file_kind(path.name)
        ignored = _non_sample_folder(path, root)
        if ignored is not None:  # landmarks/, masks/: listed once, not file by file
            builder.skip_path(ignored, f"folder ignored ({NON_SAMPLE_FOLDERS[ignored.name.lower()]})")
        elif kind == "video":
            builder.skip(relative(path, root), "video not listed in any metadata.json or labels.csv")
        elif kind == "image" and any(
            p.lower() in FRAME_FOLDERS for p in relative(path, root).split("/")[:-1]
        ):
            if media == "videos":
                continue  # frames deliberately not imported; the folder-level entry says so
            builder.skip(relative(path, root), "frame of a video no index file lists")
        else:
            builder.skip(relative(path, root), "not a listed video")
    if media == "videos":
        for folder in indexed:
            frames = next(
                (f for f in (builder.find_child(folder, n) for n in FRAME_FOLDERS) if f is not None), None
            )
            if frames is not None:
                builder.skip(relative(frames, root) + "/", "frames not imported (media=videos)")
    return builder.result


def _non_sample_folder(path: Path, root: Path) -> Path | None:
    """The outermost folder above ``path`` (below ``root``) that holds no samples (landmarks/, masks/)."""
    folder = root
    for part in Path(relative(path, root)).parts[:-1]:
        folder = folder / part
        if part.lower() in NON_SAMPLE_FOLDERS:
            return folder
    return None


def _import_index(
    index: Path, folder: Path, root: Path, builder: RowBuilder, media: Media, used: set[Path]
) -> None:
    folder_split = _folder_split(relative(folder, root).split("/"))
    frames_root = next(
        (f for f in (builder.find_child(folder, n) for n in FRAME_FOLDERS) if f is not None), None
    )
    videos_dir = builder.find_child(folder, "videos")
    used.add(index)
    for name, raw_label, split_text in _read_index(index):
        name = name.replace("\\", "/").strip()
        stem = name.rsplit(".", 1)[0]
        candidates = [folder / name] + ([videos_dir / name] if videos_dir is not None else [])
        video = next((c for c in candidates if c.is_file()), None)
        if video is not None:
            used.add(video)
        label = parse_label(raw_label, names=True)
        where = f"{relative(folder / name, root)} (from {relative(index, root)})"
        if label is None:
            builder.skip(where, f"label must be REAL or FAKE (or 0/1), got {raw_label!r}")
            continue
        split = split_from_name(split_text) if split_text else folder_split
        if split is None:
            builder.warn(f"{relative(index, root)}: unknown split {split_text!r}; using the folder's split")
            split = folder_split
        frame_dir = frames_root / Path(stem).name if frames_root is not None else None
        row = {
            "label": label,
            "split": split,
            "forgery_type": "",
            "video_id": relative(folder / stem, root),
        }
        # A video is imported as its frames where its frame folder holds images, else as its video file.
        images: list[Path] = []
        if media != "videos" and frame_dir is not None and frame_dir.is_dir():
            for path in builder.walk_files(frame_dir):
                used.add(path)
                if file_kind(path.name) == "image":
                    images.append(path)
                else:
                    builder.skip(relative(path, root), "not an image file")
        if images:
            for path in images:
                builder.add(relative(path, root), **row)
        elif media == "frames":
            builder.skip(where, "no extracted frames found (media=frames)")
        elif video is not None:
            builder.add(relative(video, root), **row)
        else:
            builder.skip(where, f"listed in {index.name} but not found")
    for path in builder.child_files(folder):
        if path.name.lower() in INDEX_FILES:
            used.add(path)
