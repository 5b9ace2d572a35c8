"""DiFF (Diffusion Facial Forgery, ACM MM 2024): 13 diffusion generators in four subsets.

Layout (as distributed; the split folders are optional)::

    <root>/{train,val,test}/real/**/*.png
    <root>/{train,val,test}/{t2i,i2i,fs,fe}/<generator>/id_XXXX/**/*.png

Subset → forgery type: T2I and I2I → entire_synthesis, FS → face_swap, FE → attribute_manipulation;
every generator is diffusion-based. Folder names match ignoring case; I2I's ``LoRA/LoRA`` nesting is
handled. The subset is kept in the ``subset`` column (cross-forgery protocols select on it).
"""

from __future__ import annotations

from pathlib import Path

from mfclip.data.importers.base import (
    ImportResult,
    Progress,
    RowBuilder,
    file_kind,
    register_importer,
    relative,
    split_from_name,
)

SUBSET_FORGERY_TYPES = {
    "t2i": "entire_synthesis",
    "i2i": "entire_synthesis",
    "fs": "face_swap",
    "fe": "attribute_manipulation",
}
SUBSET_GENERATORS = {
    "t2i": ("Midjourney", "SDXL", "FreeDoM_T", "HPS"),
    "i2i": ("SDXL_Refine", "LoRA", "DreamBooth", "FreeDoM_I"),
    "fs": ("DiffFace", "DCFace"),
    "fe": ("Imagic", "cycle_diff", "CoDiff"),
}
EXPECTED = "real/, t2i/, i2i/, fs/, fe/"


@register_importer("diff", "DiFF: {train,val,test}/real and {t2i,i2i,fs,fe}/<generator>/ folders")
def import_diff(
    root: Path, *, dataset_name: str | None = None, prompt_set: str = "default", progress: bool = False
) -> ImportResult:
    builder = RowBuilder(dataset_name or "diff", root)
    counter = Progress(progress, "scanning DiFF")
    split_dirs = [d for d in builder.child_dirs(root) if split_from_name(d.name)]
    try:
        if split_dirs:
            for path in builder.child_files(root):
                builder.skip(
                    relative(path, root), "unexpected file at the dataset root (expected split folders)"
                )
            for directory in builder.child_dirs(root):
                split = split_from_name(directory.name)
                if split is None:
                    builder.skip(
                        relative(directory, root) + "/", "unexpected folder (expected train/, val/, test/)"
                    )
                    continue
                _scan_split(directory, split, root, builder, counter)
        else:
            _scan_split(root, "", root, builder, counter)
    finally:
        counter.close()
    return builder.result


def _scan_split(directory: Path, split: str, root: Path, builder: RowBuilder, counter: Progress) -> None:
    for path in builder.child_files(directory):
        builder.skip(relative(path, root), f"unexpected file (expected folders {EXPECTED})")
    for child in builder.child_dirs(directory):
        name = child.name.lower()
        if name == "real":
            for path in builder.walk_files(child, counter):
                _add_file(builder, path, root, label=0, split=split)
        elif name in SUBSET_FORGERY_TYPES:
            _scan_subset(child, name, split, root, builder, counter)
        else:
            builder.skip(relative(child, root) + "/", f"unexpected folder (expected {EXPECTED})")


def _scan_subset(
    directory: Path, subset: str, split: str, root: Path, builder: RowBuilder, counter: Progress
) -> None:
    known = {g.lower(): g for g in SUBSET_GENERATORS[subset]}
    for path in builder.child_files(directory):
        builder.skip(
            relative(path, root), f"file directly under {subset}/ (expected {subset}/<generator>/...)"
        )
    for child in builder.child_dirs(directory):
        generator = known.get(child.name.lower())
        if generator is None:
            generator = child.name
            builder.warn(
                f"unknown DiFF generator folder {relative(child, root)}/ (known in {subset}: "
                f"{', '.join(SUBSET_GENERATORS[subset])}); kept with generator {generator!r}"
            )
        for path in builder.walk_files(child, counter):
            _add_file(
                builder,
                path,
                root,
                label=1,
                split=split,
                forgery_type=SUBSET_FORGERY_TYPES[subset],
                family="diffusion",
                generator=generator,
                subset=subset,
            )


def _add_file(builder: RowBuilder, path: Path, root: Path, label: int, split: str, **labels: str) -> None:
    rel = relative(path, root)
    kind = file_kind(path.name)
    if kind != "image":
        builder.skip(rel, "not an image file" if kind == "other" else "video file in an image dataset")
        return
    labels.setdefault("subset", "")
    builder.add(rel, label=label, split=split, **labels)
