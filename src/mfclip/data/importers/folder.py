"""Any folder tree with ``real/`` and ``fake/<generator>/`` folders.

Accepted shapes (folder names match ignoring case; ``0_real``/``1_fake`` are accepted too)::

    <root>/real/**/*.png                  <root>/{train,val,test}/real/**/*.png
    <root>/fake/<generator>/**/*.png      <root>/{train,val,test}/fake/<generator>/**/*.png
    <root>/fake/*.png  (generator unknown)

A split folder may sit anywhere above or below the class folder. The generator is the first folder below
``fake/`` that is not a split; its forgery type and family come from the prompt set's generator table.
Video files become rows too (for face preprocessing).
"""

from __future__ import annotations

from pathlib import Path

from mfclip.data.importers.base import (
    ImportResult,
    Progress,
    RowBuilder,
    canonical_generator,
    file_kind,
    generator_labels,
    load_prompts,
    register_importer,
    relative,
    split_from_name,
)

REAL_NAMES = {"real", "0_real", "reals"}
FAKE_NAMES = {"fake", "1_fake", "fakes"}


@register_importer("folder", "generic real/ and fake/<generator>/ tree, optional split folders")
def import_folder(
    root: Path, *, dataset_name: str | None = None, prompt_set: str = "default", progress: bool = False
) -> ImportResult:
    prompts = load_prompts(prompt_set)
    builder = RowBuilder(dataset_name or root.resolve().name, root)
    counter = Progress(progress, f"scanning {root}")
    unknown: set[str] = set()
    try:
        for path in builder.walk_files(root, counter):
            rel = relative(path, root)
            folders = rel.split("/")[:-1]
            lowered = [f.lower() for f in folders]
            position = next((i for i, f in enumerate(lowered) if f in REAL_NAMES | FAKE_NAMES), None)
            if position is None:
                builder.skip(rel, "not under a real/ or fake/ folder")
                continue
            kind = file_kind(path.name)
            if kind == "other":
                builder.skip(rel, "not an image or video file")
                continue
            splits = {s for s in (split_from_name(f) for f in folders) if s}
            if len(splits) > 1:
                builder.skip(rel, f"path names more than one split ({', '.join(sorted(splits))})")
                continue
            split = splits.pop() if splits else ""
            video_id = rel.rsplit(".", 1)[0] if kind == "video" else ""
            if lowered[position] in REAL_NAMES:
                builder.add(rel, label=0, split=split, video_id=video_id)
                continue
            below = [f for f in folders[position + 1 :] if not split_from_name(f)]
            generator = canonical_generator(below[0], prompts) if below else ""
            forgery_type, family = generator_labels(generator, prompts)
            if generator and generator not in prompts.generators:
                unknown.add(generator)
            builder.add(
                rel,
                label=1,
                split=split,
                forgery_type=forgery_type,
                family=family,
                generator=generator,
                video_id=video_id,
            )
    finally:
        counter.close()
    if unknown:
        builder.warn(
            f"generator(s) not in prompt set {prompts.name!r}: {', '.join(sorted(unknown))}; "
            "their forgery_type and family are left empty"
        )
    return builder.result
