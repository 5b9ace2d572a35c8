"""FaceForensics++ (and its DeepFakeDetection part, DFD).

Layout of the official download (``download-FaceForensics.py -c raw|c23|c40 -t videos|masks``), with
frames extracted by the official script (``images/``) or by DeepfakeBench's preprocessing (``frames/``,
beside its ``landmarks/`` and ``masks/``)::

    <root>/original_sequences/youtube/<raw|c0|c23|c40>/videos/000.mp4
    <root>/original_sequences/youtube/<comp>/{frames,images}/000/0000.png
    <root>/manipulated_sequences/<Method>/<comp>/videos/000_003.mp4        (target_source)
    <root>/manipulated_sequences/<Method>/<comp>/{frames,images}/000_003/0000.png
    <root>/manipulated_sequences/<Method>/masks/videos/000_003.mp4          (listed as skipped)
    <root>/splits/{train,val,test}.json   (or <root>/{train,val,test}.json, as DeepfakeBench keeps them)
    <root>/downloaded_videos/             (the source YouTube videos; listed as skipped)

``c0`` (the name the official extraction instructions use for constant rate factor 0) is ``raw``.
Methods: Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter. DFD is
``original_sequences/actors`` + ``manipulated_sequences/DeepFakeDetection`` (``mfclip import dfd``; no
official split). With ``media="auto"`` each video is imported as its frames where its frame folder
holds images, else as its video file; video rows are turned into face crops by face preprocessing.
``video_id`` is ``<method>/<comp>/<id>`` so the same id under two methods or compressions stays two
videos. The split files list every video: one missing on disk (neither frames nor video) is listed as
skipped, and so is everything else the importer does not use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mfclip.data.importers.base import (
    ImporterError,
    ImportResult,
    Progress,
    RowBuilder,
    find_child,
    generator_labels,
    load_prompts,
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
from mfclip.schema import SPLITS

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("raw", "c23", "c40")
#: Folder names of each compression: the download script writes ``raw``, the extraction script's
#: documentation calls it ``c0`` (constant rate factor 0).
COMPRESSION_FOLDERS = {"raw": "raw", "c0": "raw", "c23": "c23", "c40": "c40"}
#: DFD's fakes are face swaps (the DeepfakeBench importer uses this too).
DFD_FORGERY_TYPE = "face_swap"
#: Top-level entries of the download that are not samples, and why they are not imported.
IGNORED_AT_ROOT = {
    "downloaded_videos": "the source YouTube videos the sequences were cut from, not samples",
    "benchmark": "the FaceForensics benchmark images (unlabelled)",
}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar")


def scan_media_folder(
    directory: Path,
    builder: RowBuilder,
    counter: Progress,
    media: Media,
    video_prefix: str,
    **row: object,
) -> set[str]:
    """Rows for one ``<comp>`` folder holding ``videos/`` and/or ``frames/`` (or ``images/``).

    A video is imported as its frames where its frame folder holds images, else as its video file
    (:func:`~mfclip.data.importers.media.add_videos`). Returns the ids of the videos found (a video file,
    a frame folder or both).
    """
    root = builder.result.root
    videos_dir = builder.find_child(directory, VIDEO_FOLDER)
    frames_dir = frame_folder(directory, builder)
    for child in builder.child_dirs(directory):
        if child not in (videos_dir, frames_dir):
            what = NON_SAMPLE_FOLDERS.get(child.name.lower(), "only videos/ and frames/ hold samples")
            builder.skip_path(child, f"folder ignored ({what})")
    for path in builder.child_files(directory):
        builder.skip_path(path, "unexpected file (expected videos/ or frames/ folders)")
    if videos_dir is None and frames_dir is None:
        builder.skip_path(directory, "no videos/ or frames/ folder")
        return set()
    videos: dict[str, Path] = {}
    if videos_dir is not None:
        videos = video_files(list(builder.walk_files(videos_dir, None)), builder)
    frame_dirs: dict[str, Path] = {}
    if frames_dir is not None:
        frame_dirs = {d.name: d for d in builder.child_dirs(frames_dir)}
        if media == "videos":
            builder.skip_path(frames_dir, "frames not imported (--media videos)")
        for path in builder.child_files(frames_dir):
            builder.skip_path(path, "file directly under frames/ (expected frames/<video>/...)")
    note = (relative(videos_dir, root) + "/", "videos") if videos_dir is not None else None
    usable_frames = frame_dirs if media != "videos" else {}
    add_videos(builder, counter, media, videos, usable_frames, video_prefix, note, **row)
    return set(videos) | set(frame_dirs)


@dataclass
class SplitFiles:
    """The official split files found: video id → split, and which of the three files were there."""

    table: dict[str, str] = field(default_factory=dict)
    directory: Path | None = None
    found: list[str] = field(default_factory=list)  # split names whose file was read
    missing: list[str] = field(default_factory=lambda: list(SPLITS))

    def files(self) -> list[Path]:
        return [self.directory / f"{s}.json" for s in self.found] if self.directory is not None else []

    def describe(self) -> str:
        """``train.json, test.json (val.json not found)``: the files used, for skipped-list reasons."""
        text = ", ".join(f"{s}.json" for s in self.found)
        if self.missing:
            text += f" ({', '.join(f'{s}.json' for s in self.missing)} not found)"
        return text


def load_ffpp_splits(root: Path, split_dir: str | Path | None) -> SplitFiles:
    """Video id → split from the official ``{train,val,test}.json`` (lists of ``[id, id]`` pairs).

    They are looked for in ``split_dir``, else in ``ROOT/splits/`` and then ``ROOT/`` (where
    DeepfakeBench keeps them); the first folder holding any of them is used, and the files it lacks are
    listed in ``missing``. With ``split_dir`` and none of the files there, the import fails.
    """
    candidates = [Path(split_dir)] if split_dir is not None else [root / "splits", root]
    for directory in candidates:
        found = [s for s in SPLITS if (directory / f"{s}.json").is_file()]
        if not found:
            continue
        splits = SplitFiles(directory=directory, found=found, missing=[s for s in SPLITS if s not in found])
        for split in found:
            file = directory / f"{split}.json"
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
                    splits.table[key] = split
        return splits
    if split_dir is not None:
        raise ImporterError(
            f"FaceForensics++ split files not found in {split_dir}: none of train.json, val.json, test.json"
        )
    return SplitFiles()


def _video_number(value: str | int) -> str:
    text = str(value).strip()
    return f"{int(text):03d}" if text.isdigit() else text


def canonical_compression(name: str) -> str | None:
    """``raw``, ``c23`` or ``c40`` for a compression folder name or option (``c0`` is ``raw``), else None."""
    return COMPRESSION_FOLDERS.get(name.lower())


def _skip_file(path: Path, builder: RowBuilder, reason: str) -> None:
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        builder.skip_path(path, "archive, not imported (extract it to import what it holds)")
    else:
        builder.skip_path(path, reason)


def _skip_files(directory: Path, builder: RowBuilder, expected: str) -> None:
    for path in builder.child_files(directory):
        _skip_file(path, builder, f"unexpected file (expected {expected})")


def _comp_dirs(parent: Path, compression: str, builder: RowBuilder) -> list[tuple[Path, str]]:
    """The compression folders of a method (or source) folder to import, with their canonical names."""
    wanted = compression if compression == "all" else canonical_compression(compression)
    if wanted is None:
        raise ImporterError(
            f"compression must be one of {', '.join(COMPRESSIONS)} (c0 = raw) or all, got {compression!r}"
        )
    _skip_files(parent, builder, "compression folders")
    found: dict[str, Path] = {}
    for child in builder.child_dirs(parent):
        name = canonical_compression(child.name)
        if name is None:
            what = NON_SAMPLE_FOLDERS.get(child.name.lower())
            builder.skip_path(
                child,
                f"folder ignored ({what})" if what else "not a compression folder (raw or c0, c23, c40)",
            )
        elif name in found:
            builder.skip_path(child, f"same compression as {found[name].name}/, which is imported")
        else:
            found[name] = child
    chosen = [(d, n) for n, d in found.items() if wanted in ("all", n)]
    for name, directory in found.items():
        if wanted not in ("all", name):
            builder.skip_path(directory, f"compression {name} not imported (--compression)")
    if not chosen and found:
        raise ImporterError(
            f"{parent}: no {wanted}/ folder (found {', '.join(d.name for d in found.values())}); "
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


def _list_root(root: Path, builder: RowBuilder, used: list[Path]) -> None:
    """List every top-level entry of a FaceForensics++ root that is not in ``used`` as skipped."""
    for child in builder.child_dirs(root):
        if child in used:
            continue
        what = IGNORED_AT_ROOT.get(child.name.lower())
        if what is not None:
            builder.skip_path(child, f"folder ignored ({what})")
        elif child.name.lower() == "splits":
            builder.skip_path(child, "folder ignored (no train.json, val.json or test.json in it)")
        else:
            builder.skip_path(
                child, "unexpected folder (expected original_sequences/, manipulated_sequences/, splits/)"
            )
    for path in builder.child_files(root):
        if path not in used:
            _skip_file(path, builder, "unexpected file at the dataset root")


def _scan_sources(
    sources: list[tuple[Path, str, int, dict[str, str]]],
    compression: str,
    media: Media,
    builder: RowBuilder,
    counter: Progress,
) -> list[tuple[Path, str, int, set[str]]]:
    """Rows for every (folder, name, label, labels) source; returns, per compression folder scanned,
    (folder, name, label, ids of the videos found there)."""
    scanned = []
    for folder, name, label, labels in sources:
        for comp, comp_name in _comp_dirs(folder, compression, builder):
            present = scan_media_folder(
                comp,
                builder,
                counter,
                media,
                video_prefix=f"{name}/{comp_name}/",
                label=label,
                compression=comp_name,
                **labels,
            )
            scanned.append((comp, name, label, present))
    return scanned


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
    splits = load_ffpp_splits(root, split_dir)
    if not splits.found:
        builder.result.split_hint = (
            f"FaceForensics++ split files not found: looked for train.json, val.json and test.json in "
            f"{root / 'splits'} and {root}; pass --split-dir"
        )
    elif splits.missing:
        builder.warn(
            f"{splits.directory}: {', '.join(f'{s}.json' for s in splits.missing)} not found; using "
            f"{', '.join(f'{s}.json' for s in splits.found)} (videos of the other splits are skipped)"
        )
    _list_root(root, builder, [p for p in (original, manipulated, splits.directory) if p] + splits.files())
    sources: list[tuple[Path, str, int, dict[str, str]]] = []  # (folder, name, label, labels)
    if original is not None:
        _skip_files(original, builder, "youtube/")
        youtube = builder.find_child(original, "youtube")
        if youtube is None:
            builder.skip_path(original, "no youtube/ folder (the FaceForensics++ real videos)")
        else:
            sources.append((youtube, "youtube", 0, {}))
        for child in builder.child_dirs(original):
            if child.name.lower() == "actors":
                builder.skip_path(child, "DFD real videos: import them with `mfclip import dfd`")
            elif child != youtube:
                builder.skip_path(child, "unknown source folder (expected youtube/)")
    if manipulated is not None:
        _skip_files(manipulated, builder, "method folders")
        for child in builder.child_dirs(manipulated):
            method = next((m for m in FFPP_METHODS if m.lower() == child.name.lower()), None)
            if child.name.lower() == "deepfakedetection":
                builder.skip_path(child, "DFD fakes: import them with `mfclip import dfd`")
                continue
            if method is None:
                builder.warn(
                    f"unknown FaceForensics++ method folder {relative(child, root)}/; kept as generator"
                )
                method = child.name
            forgery_type, family = generator_labels(method, prompts)
            labels = {"forgery_type": forgery_type, "family": family, "generator": method}
            sources.append((child, method, 1, labels))
    counter = Progress(progress, "scanning FaceForensics++")
    try:
        scanned = _scan_sources(sources, compression, media, builder, counter)
    finally:
        counter.close()
    if splits.found:
        _apply_splits(builder, splits, scanned)
    return builder.result


def _apply_splits(
    builder: RowBuilder, splits: SplitFiles, scanned: list[tuple[Path, str, int, set[str]]]
) -> None:
    """Set each row's split; skip videos outside the split files, list split videos missing on disk."""
    rows = []
    for row in builder.result.rows:
        video = row["video_id"].rsplit("/", 1)[-1]
        split = splits.table.get(video)
        if split is None:
            reason = f"video {video} is not in the official split files ({splits.describe()})"
            builder.skip(row["path"], reason)
            continue
        row["split"] = split
        rows.append(row)
    builder.result.rows = rows
    root = builder.result.root
    for comp, _name, label, present in scanned:
        # Real videos are single ids (000), fakes target_source pairs (000_003).
        expected = {key for key in splits.table if ("_" in key) == bool(label)}
        videos_dir = builder.find_child(comp, VIDEO_FOLDER)
        for video in sorted(expected - present):
            where = f"{relative(videos_dir or comp, root)}/{video}" + (".mp4" if videos_dir else "")
            builder.skip(
                where, f"in {splits.table[video]}.json, but neither its frames nor its video file is here"
            )


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
    actors = builder.find_child(original, "actors") if original is not None else None
    fakes = builder.find_child(manipulated, "DeepFakeDetection") if manipulated is not None else None
    sources: list[tuple[Path, str, int, dict[str, str]]] = []
    if actors is not None:
        sources.append((actors, "actors", 0, {}))
    if fakes is not None:
        sources.append((fakes, "DeepFakeDetection", 1, {"forgery_type": DFD_FORGERY_TYPE}))
    if not sources:
        raise ImporterError(
            f"no original_sequences/actors/ or manipulated_sequences/DeepFakeDetection/ under {root}"
        )
    for parent in (original, manipulated):
        for child in builder.child_dirs(parent) if parent is not None else []:
            if child not in (actors, fakes):
                builder.skip_path(child, "not part of DFD (FaceForensics++: `mfclip import ffpp`)")
    _list_root(root, builder, [p for p in (original, manipulated) if p])
    counter = Progress(progress, "scanning DFD")
    try:
        _scan_sources(sources, compression, media, builder, counter)
    finally:
        counter.close()
    return builder.result
