"""DeepfakeBench dataset JSON files (``dataset_json/<Dataset>.json``).

Shape: ``{dataset: {label_name: {train|val|test: {[c23|c40|raw:] {video: {"label": label_name,
"frames": [paths], ...}}}}}}``. ``label_name`` is e.g. ``FF-real``, ``FF-DF``, ``CelebDFv2_fake``,
``DFDC_Real``: names containing "real" are real, all others fake; FaceForensics++ method names map to
generators (FF-DF → Deepfakes, FF-F2F → Face2Face, FF-FS → FaceSwap, FF-NT → NeuralTextures,
FF-FH → FaceShifter); ``CelebDFv1_fake``, ``CelebDFv2_fake`` and ``DFD_fake`` are face swaps, as in the
native importers. The label name is kept in ``subset``, the compression in ``compression``.

Frame paths in these files are often absolute paths of the machine that made them, sometimes with
Windows separators. Each path is matched to ``root`` by its longest tail that exists there (the
part to strip is found once and reused). A video listed under several splits (DeepfakeBench copies test
videos into val, and some datasets into all three) is kept once, in the first of test, val, train; the
other listings are reported as skipped.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from mfclip.data.importers.base import (
    ImporterError,
    ImportResult,
    Progress,
    RowBuilder,
    file_kind,
    generator_labels,
    load_prompts,
    register_importer,
    split_from_name,
)
from mfclip.data.importers.celebdf import FORGERY_TYPE as CELEBDF_FORGERY_TYPE
from mfclip.data.importers.ffpp import DFD_FORGERY_TYPE

COMPRESSIONS = ("raw", "c23", "c40")
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}
FFPP_GENERATORS = {
    "ff-df": "Deepfakes",
    "ff-f2f": "Face2Face",
    "ff-fs": "FaceSwap",
    "ff-nt": "NeuralTextures",
    "ff-fh": "FaceShifter",
}
#: Forgery types of DeepfakeBench label names that name no generator, as the native importers set them.
LABEL_FORGERY_TYPES = {
    "celebdfv1_fake": CELEBDF_FORGERY_TYPE,
    "celebdfv2_fake": CELEBDF_FORGERY_TYPE,
    "dfd_fake": DFD_FORGERY_TYPE,
}
DATASET_NAMES = {
    "faceforensics++": "ffpp",
    "faceshifter": "ffpp",
    "deepfakedetection": "dfd",
    "celeb-df-v1": "celebdf_v1",
    "celeb-df-v2": "celebdf",
    "dfdc": "dfdc",
    "dfdcp": "dfdcp",
    "deeperforensics-1.0": "deeperforensics",
    "uadfv": "uadfv",
}


def dataset_slug(name: str) -> str:
    lower = name.lower()
    if lower in DATASET_NAMES:
        return DATASET_NAMES[lower]
    if lower in FFPP_GENERATORS or lower == "ff-real":
        return "ffpp"
    return re.sub(r"[^a-z0-9]+", "_", lower).strip("_") or "dataset"


def label_from_name(value: Any) -> int | None:
    """0 for names containing "real", 1 for other names or 1; None for anything unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in (0, 1) else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    if text in ("0", "1"):
        return int(text)
    return 0 if "real" in text else 1


class FrameResolver:
    """Map a frame path from a DeepfakeBench JSON onto a path relative to ``root`` that exists."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._strip_counts: Counter[int] = Counter()

    def resolve(self, raw: str) -> str | None:
        parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
        if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
            parts = parts[1:]
        tried = set()
        for strip in [k for k, _ in self._strip_counts.most_common(4)] + list(range(len(parts))):
            if strip in tried or strip >= len(parts):
                continue
            tried.add(strip)
            tail = parts[strip:]
            if ".." in tail:
                continue
            if os.path.isfile(os.path.join(self.root, *tail)):
                self._strip_counts[strip] += 1
                return "/".join(tail)
        return None


def _walk(node: Any, keys: tuple[str, ...]):
    """Yield (key path, video entry) for every dict holding a ``frames`` list."""
    if not isinstance(node, dict):
        return
    if "frames" in node and isinstance(node["frames"], list):
        yield keys, node
        return
    for key, child in node.items():
        yield from _walk(child, (*keys, str(key)))


@register_importer(
    "deepfakebench", "DeepfakeBench dataset JSON (dataset_json/<Dataset>.json)", options=("json_path",)
)
def import_deepfakebench(
    root: Path,
    *,
    json_path: str | Path | None = None,
    dataset_name: str | None = None,
    prompt_set: str = "default",
    progress: bool = False,
) -> ImportResult:
    if json_path is None:
        raise ImporterError("the deepfakebench importer needs --json FILE (a DeepfakeBench dataset JSON)")
    json_path = Path(json_path)
    if not json_path.is_file():
        raise ImporterError(f"{json_path}: JSON file not found")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImporterError(f"{json_path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ImporterError(f"{json_path}: expected a JSON object {{dataset: {{label: {{split: ...}}}}}}")
    prompts = load_prompts(prompt_set)
    builder = RowBuilder(dataset_name or "deepfakebench", root)
    resolver = FrameResolver(root)
    # video key → (split, entry, keys); the best split wins.
    chosen: dict[tuple[str, ...], tuple[str, dict[str, Any], tuple[str, ...]]] = {}
    entries = list(_walk(data, ()))
    if not entries:
        raise ImporterError(f"{json_path}: no video entries with a 'frames' list found")
    for keys, entry in entries:
        split = next((s for s in (split_from_name(k) for k in keys) if s), "")
        identity = tuple(k for k in keys if not split_from_name(k))
        previous = chosen.get(identity)
        where = "/".join(keys)
        if previous is None or SPLIT_PRIORITY.get(split, 3) < SPLIT_PRIORITY.get(previous[0], 3):
            if previous is not None:
                builder.skip("/".join(previous[2]), f"video also listed under split {split!r}; kept there")
            chosen[identity] = (split, entry, keys)
        else:
            builder.skip(where, f"video also listed under split {previous[0]!r}; kept there")
    counter = Progress(progress, "resolving DeepfakeBench frames")
    try:
        for identity, (split, entry, keys) in chosen.items():
            _add_video(
                identity, split, entry, keys, builder, resolver, counter, dataset_name, json_path, prompts
            )
    finally:
        counter.close()
    return builder.result


def _add_video(
    identity: tuple[str, ...],
    split: str,
    entry: dict[str, Any],
    keys: tuple[str, ...],
    builder: RowBuilder,
    resolver: FrameResolver,
    counter: Progress,
    dataset_name: str | None,
    json_path: Path,
    prompts: Any,
) -> None:
    where = "/".join(keys)
    dataset_key = identity[0] if len(identity) > 1 else json_path.stem
    label_key = identity[1] if len(identity) > 2 else ""
    label = label_from_name(entry.get("label", label_key))
    if label is None:
        builder.skip(where, f"unusable label {entry.get('label')!r}")
        return
    frames = entry["frames"]
    if not frames:
        builder.skip(where, "video lists no frames")
        return
    compression = next((k for k in identity if k in COMPRESSIONS), "")
    generator = FFPP_GENERATORS.get(str(entry.get("label", label_key)).lower(), "") if label else ""
    generator = generator or (FFPP_GENERATORS.get(label_key.lower(), "") if label else "")
    forgery_type, family = generator_labels(generator, prompts)
    if label and not forgery_type:
        label_name = str(entry.get("label", label_key)).lower()
        forgery_type = LABEL_FORGERY_TYPES.get(label_name, LABEL_FORGERY_TYPES.get(label_key.lower(), ""))
    video = identity[-1]
    video_parts = [label_key, compression, video] if label_key else [video]
    for raw in frames:
        counter.update()
        if not isinstance(raw, str):
            builder.skip(where, f"frame entry is not a path: {raw!r}")
            continue
        rel = resolver.resolve(raw)
        if rel is None:
            builder.skip(raw, f"frame of {where} not found under {builder.result.root}")
            continue
        if file_kind(rel) != "image":
            builder.skip(rel, "not an image file")
            continue
        builder.add(
            rel,
            label=label,
            split=split,
            dataset=dataset_name or dataset_slug(dataset_key),
            forgery_type=forgery_type,
            family=family,
            generator=generator,
            video_id="/".join(p for p in video_parts if p),
            subset=label_key,
            compression=compression,
        )
