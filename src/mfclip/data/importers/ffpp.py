"""FaceForensics++ (and its DeepFakeDetection part, DFD).

Layout of the official download, with frames extracted by the official script (``images/``) or by
DeepfakeBench (``frames/``)::

    <root>/original_sequences/youtube/<c23|c40|raw>/videos/000.mp4
    <root>/original_sequences/youtube/<comp>/{frames,images}/000/0000.png
    <root>/manipulated_sequences/<Method>/<comp>/videos/000_003.mp4        (target_source)
    <root>/manipulated_sequences/<Method>/<comp>/{frames,images}/000_003/0000.png
    <root>/splits/{train,val,test}.json   (official split files: lists of [id, id] pairs)

Methods: Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter. DFD is
``original_sequences/actors`` + ``manipulated_sequences/DeepFakeDetection`` (``mfclip import dfd``; no
official split). ``media="auto"`` imports frames where a frame folder exists and videos elsewhere; video
rows are turned into face crops by face preprocessing. ``video_id`` is ``<method>/<comp>/<id>`` so the
same id under two methods or compressions stays two videos. Other folders (``masks``, ``landmarks``) are
listed as skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from mfclip.data.importers.base import (
    ImporterError,
    ImportResult,
    Progress,
    RowBuilder,
    file_kind,
    find_child,
    generator_labels,
    load_prompts,
    register_importer,
    relative,
)

Media = Literal["auto", "videos", "frames"]
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("raw", "c23", "c40")
FRAME_FOLDERS = ("frames", "images")


def check_media(media: str) -> None:
    if media not in ("auto", "videos", "frames"):
        raise ImporterError(f"media must be auto, videos or frames, got {media!r}")


def scan_media_folder(
    directory: Path,
    root: Path,
    builder: RowBuilder,
    counter: Progress,
    media: Media,
    video_prefix: str,
    **row: object,
) -> int:
    """Rows for one ``<comp>`` folder holding ``videos/`` and/or ``frames/`` (or ``images/``).

    Returns the number of rows added. ``video_prefix`` + the video's id is its ``video_id``.
    """
    videos = builder.find_child(directory, "videos")
    frames = next(
        (f for f in (builder.find_child(directory, n) for n in FRAME_FOLDERS) if f is not None), None
    )
    use_frames = media == "frames" or (
        media == "auto" and frames is not None and any(builder.child_dirs(frames))
    )
    before = len(builder.result.rows)
    for child in builder.child_dirs(directory):
        if child not in (videos, frames):
            builder.skip(
                relative(child, root) + "/", "folder ignored (only videos/ and frames/ hold samples)"
            )
    for path in builder.child_files(directory):
        builder.skip(relative(path, root), "unexpected file (expected videos/ or frames/ folders)")
    if use_frames:
        if videos is not None:
            builder.skip(relative(videos, root) + "/", "videos not imported: their extracted frames are")
        if frames is None:
            builder.skip(relative(directory, root) + "/", "no frames/ folder (media=frames)")
            return 0
        for path in builder.child_files(frames):
            builder.skip(relative(path, root), "file directly under frames/ (expected frames/<video>/...)")
        for video_dir in builder.child_dirs(frames):
            video_id = f"{video_prefix}{video_dir.name}"
            for path in builder.walk_files(video_dir, counter):
                rel = relative(path, root)
                if file_kind(path.name) != "image":
                    builder.skip(rel, "not an image file")
                    continue
                builder.add(rel, video_id=video_id, **row)  # type: ignore[arg-type]
    else:
        if frames is not None:
            builder.skip(relative(frames, root) + "/", "frames not imported (media=videos)")
        if videos is None:
            builder.skip(relative(directory, root) + "/", "no videos/ folder")
            return 0
        for path in builder.walk_files(videos, counter):
            rel = relative(path, root)
            if file_kind(path.name) != "video":
                builder.skip(rel, "not a video file")
                continue
            builder.add(rel, video_id=f"{video_prefix}{path.stem}", **row)  # type: ignore[arg-type]
    return len(builder.result.rows) - before


def load_ffpp_splits(root: Path, split_dir: str | Path | None) -> tuple[dict[str, str], str | None]:
    """Video id → split from the official ``{train,val,test}.json``; also a hint when none were found."""
    candidates = [Path(split_dir)] if split_dir is not None else [root / "splits", root]
    for directory in candidates:
        files = {s: directory / f"{s}.json" for s in ("train", "val", "test")}
        if not all(f.is_file() for f in files.values()):
            if split_dir is not None:
                missing = [str(f) for f in files.values() if not f.is_file()]
                raise ImporterError(f"FaceForensics++ split file(s) not found: {', '.join(missing)}")
            continue
        table: dict[str, str] = {}
        for split, file in files.items():
            try:
                pairs = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ImporterError(f"{file}: not a readable JSON split file ({exc})") from None
            if not isinstance(pairs, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, (str, int)) for x in p)
                for p in pairs
            ):
                raise ImporterError(f'{file}: expected a list of [id, id] pairs like [["953", "974"], ...]')
            for first, second in pairs:
                a, b = _video_number(first), _video_number(second)
                for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                    table[key] = split
        return table, None
    hint = f"FaceForensics++ split files not found in {root / 'splits'} (train.json, val.json, test.json)"
    return {}, hint


def _video_number(value: str | int) -> str:
    text = str(value).strip()
    return f"{int(text):03d}" if text.isdigit() else text


def _comp_dirs(parent: Path, compression: str, root: Path, builder: RowBuilder) -> list[Path]:
    found = [d for d in builder.child_dirs(parent) if d.name in COMPRESSIONS]
    for other in builder.child_dirs(parent):
        if other.name not in COMPRESSIONS:
            builder.skip(relative(other, root) + "/", f"not a compression folder ({', '.join(COMPRESSIONS)})")
    if compression == "all":
        return found
    if compression not in COMPRESSIONS:
        raise ImporterError(
            f"compression must be one of {', '.join(COMPRESSIONS)} or all, got {compression!r}"
        )
    chosen = [d for d in found if d.name == compression]
    for other in found:
        if other.name != compression:
            builder.skip(
                relative(other, root) + "/", f"compression {other.name} not imported (--compression)"
            )
    if not chosen and found:
        raise ImporterError(
            f"{parent}: no {compression}/ folder (found {', '.join(d.name for d in found)}); "
            "pass --compression"
        )
    return chosen


def _check_root(root: Path) -> tuple[Path | None, Path | None]:
    original = find_child(root, "original_sequences")
    manipulated = find_child(root, "manipulated_sequences")
    if original is None and manipulated is None:
        raise ImporterError(
            f"no original_sequences/ or manipulated_sequences/ under {root}: is it the FaceForensics++ root?"
        )
    return original, manipulated


@register_importer(
    "ffpp",
    "FaceForensics++: original_sequences/youtube + manipulated_sequences/<Method>, official splits",
    options=("compression", "media", "split_dir"),
)
def import_ffpp(
    root: Path,
    *,
    compression: str = "c23",
    media: Media = "auto",
    split_dir: str | Path | None = None,
    dataset_name: str | None = None,
    prompt_set: str = "default",
    progress: bool = False,
) -> ImportResult:
    check_media(media)
    prompts = load_prompts(prompt_set)
    builder = RowBuilder(dataset_name or "ffpp", root)
    original, manipulated = _check_root(root)
    splits, hint = load_ffpp_splits(root, split_dir)
    builder.result.split_hint = hint
    counter = Progress(progress, "scanning FaceForensics++")
    sources: list[tuple[Path, str, int]] = []  # (method folder, method name, label)
    if original is not None:
        youtube = builder.find_child(original, "youtube")
        if youtube is None:
            builder.skip(
                relative(original, root) + "/", "no youtube/ folder (the FaceForensics++ real videos)"
            )
        else:
            sources.append((youtube, "youtube", 0))
        for child in builder.child_dirs(original):
            if child.name.lower() not in ("youtube", "actors"):
                builder.skip(relative(child, root) + "/", "unknown source folder (expected youtube/)")
            elif child.name.lower() == "actors":
                builder.skip(
                    relative(child, root) + "/", "DFD real videos: import them with `mfclip import dfd`"
                )
    if manipulated is not None:
        for child in builder.child_dirs(manipulated):
            method = next((m for m in FFPP_METHODS if m.lower() == child.name.lower()), None)
            if child.name.lower() == "deepfakedetection":
                builder.skip(relative(child, root) + "/", "DFD fakes: import them with `mfclip import dfd`")
            elif method is None:
                builder.warn(
                    f"unknown FaceForensics++ method folder {relative(child, root)}/; kept as generator"
                )
                sources.append((child, child.name, 1))
            else:
                sources.append((child, method, 1))
    try:
        for folder, method, label in sources:
            forgery_type, family = generator_labels(method, prompts) if label else ("", "")
            for comp in _comp_dirs(folder, compression, root, builder):
                scan_media_folder(
                    comp,
                    root,
                    builder,
                    counter,
                    media,
                    video_prefix=f"{method}/{comp.name}/",
                    label=label,
                    forgery_type=forgery_type,
                    family=family,
                    generator=method if label else "",
                    compression=comp.name,
                )
    finally:
        counter.close()
    if splits:
        rows = []
        for row in builder.result.rows:
            video = row["video_id"].rsplit("/", 1)[-1]
            split = splits.get(video)
            if split is None:
                builder.skip(row["path"], f"video {video} is not in the official split files")
                continue
            row["split"] = split
            rows.append(row)
        builder.result.rows = rows
    return builder.result


@register_importer(
    "dfd",
    "DeepFakeDetection (part of FaceForensics++): original_sequences/actors + DeepFakeDetection",
    options=("compression", "media"),
)
def import_dfd(
    root: Path,
    *,
    compression: str = "c23",
    media: Media = "auto",
    dataset_name: str | None = None,
    prompt_set: str = "default",
    progress: bool = False,
) -> ImportResult:
    check_media(media)
    builder = RowBuilder(dataset_name or "dfd", root)
    original, manipulated = _check_root(root)
    builder.result.split_hint = "DFD has no official split"
    counter = Progress(progress, "scanning DFD")
    sources = []
    actors = builder.find_child(original, "actors") if original is not None else None
    fakes = builder.find_child(manipulated, "DeepFakeDetection") if manipulated is not None else None
    if actors is not None:
        sources.append((actors, "actors", 0))
    if fakes is not None:
        sources.append((fakes, "DeepFakeDetection", 1))
    if not sources:
        raise ImporterError(
            f"no original_sequences/actors/ or manipulated_sequences/DeepFakeDetection/ under {root}"
        )
    try:
        for folder, name, label in sources:
            for comp in _comp_dirs(folder, compression, root, builder):
                scan_media_folder(
                    comp,
                    root,
                    builder,
                    counter,
                    media,
                    video_prefix=f"{name}/{comp.name}/",
                    label=label,
                    forgery_type="face_swap" if label else "",
                    compression=comp.name,
                )
    finally:
        counter.close()
    return builder.result
