"""GenFace (TIFS 2024): its folder layout is not public, so it is imported from a CSV the user writes.

The CSV needs ``path`` (relative to the root, or absolute inside it) and ``generator`` (empty, ``real`` or
``pristine`` for real images). Optional columns: ``label`` (0/1; otherwise derived from the generator),
``split``, ``forgery_type``, ``family``, ``video_id``. Forgery type and family default to the prompt set's
generator table (DDPM, LatDiff, CollDiff, StyleGAN3, DiffAE, LatTrans, IA-FaceS, FSLSD, FaceSwapper,
DiffFace); generator names match ignoring case and punctuation (``IAFaces`` → ``IA-FaceS``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mfclip.data.importers.base import (
    ImporterError,
    ImportResult,
    RowBuilder,
    canonical_generator,
    generator_labels,
    load_prompts,
    register_importer,
    relative,
    split_from_name,
)
from mfclip.data.manifest import path_problem

REAL_GENERATOR_NAMES = {"", "real", "pristine", "original", "none"}


@register_importer("genface", "GenFace from a CSV of path, generator [, label, split, ...]", options=("csv",))
def import_genface(
    root: Path,
    *,
    csv: str | Path | None = None,
    dataset_name: str | None = None,
    prompt_set: str = "default",
    progress: bool = False,
) -> ImportResult:
    if csv is None:
        raise ImporterError("the genface importer needs --csv FILE listing path and generator of every image")
    return import_label_csv(Path(csv), root, dataset_name or "genface", prompt_set)


def import_label_csv(csv_path: Path, root: Path, dataset: str, prompt_set: str) -> ImportResult:
    """Rows from a CSV of path + generator (+ label, split, forgery_type, family, video_id)."""
    if not csv_path.is_file():
        raise ImporterError(f"{csv_path}: CSV file not found")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ImporterError(f"{csv_path}: not a readable CSV ({exc})") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("path", "generator") if c not in table.columns]
    if missing:
        raise ImporterError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; found {', '.join(table.columns) or 'none'}"
        )
    prompts = load_prompts(prompt_set)
    builder = RowBuilder(dataset, root)
    root_resolved = root.resolve()
    unknown: set[str] = set()
    for number, record in enumerate(table.to_dict("records")):
        where = f"{csv_path.name} line {number + 2}"
        raw_path = record["path"].strip()
        if not raw_path:
            builder.skip(where, "empty path")
            continue
        path = raw_path.replace("\\", "/")
        if os.path.isabs(path):
            absolute = Path(path).resolve()
            if not absolute.is_relative_to(root_resolved):
                builder.skip(raw_path, f"{where}: absolute path outside the root {root}")
                continue
            path = relative(absolute, root_resolved)
        problem = path_problem(path)
        if problem:
            builder.skip(raw_path, f"{where}: {problem}")
            continue
        generator_text = record["generator"].strip()
        label_text = record.get("label", "").strip()
        if label_text:
            if label_text not in ("0", "1"):
                builder.skip(path, f"{where}: label must be 0 or 1, got {label_text!r}")
                continue
            label = int(label_text)
        else:
            label = 0 if generator_text.lower() in REAL_GENERATOR_NAMES else 1
        split_text = record.get("split", "").strip()
        split = split_from_name(split_text) if split_text else ""
        if split is None:
            builder.skip(path, f"{where}: split must be train, val or test, got {split_text!r}")
            continue
        video_id = record.get("video_id", "").strip()
        if label == 0:
            if generator_text.lower() not in REAL_GENERATOR_NAMES:
                builder.skip(path, f"{where}: label 0 (real) but generator {generator_text!r}")
                continue
            builder.add(path, label=0, split=split, video_id=video_id)
            continue
        generator = (
            ""
            if generator_text.lower() in REAL_GENERATOR_NAMES
            else canonical_generator(generator_text, prompts)
        )
        forgery_type, family = generator_labels(generator, prompts)
        if generator and generator not in prompts.generators:
            unknown.add(generator)
        builder.add(
            path,
            label=1,
            split=split,
            forgery_type=record.get("forgery_type", "").strip() or forgery_type,
            family=record.get("family", "").strip() or family,
            generator=generator,
            video_id=video_id,
        )
    if unknown:
        builder.warn(
            f"generator(s) not in prompt set {prompts.name!r}: {', '.join(sorted(unknown))}; "
            "forgery_type and family are empty unless the CSV gives them"
        )
    return builder.result
