"""DiffusionFace (arXiv 2403.18471): 11 diffusion models over MM-CelebA-HQ faces.

The released archives are organised by generation category, then by method; this importer assumes::

    <root>/<real folder>/**/*.jpg                  real faces: real, MM-CelebA-HQ, CelebA-HQ, celeba_hq, ...
    <root>/<category>/<method>/**/*.png            fakes; the method is the generator
    <root>/<method>/**/*.png                       also accepted: a method folder at the top level

Category → forgery type (names match ignoring case and punctuation)::

    unconditional, uncond, noise2image, text2img, t2i, text_guided, img2img, i2i → entire_synthesis
    inpaint, inpainting, editing, edit                                            → attribute_manipulation
    faceswap, face_swap, diffswap, swap                                           → face_swap

A top-level folder that is neither real nor a category is taken as a method whose forgery type comes
from the prompt set's generator table (empty when unknown). Every fake is diffusion-based. A
``train``/``val``/``test`` folder anywhere in a path sets the split; otherwise rows get the split chosen
at import time (``--default-split`` or ``--split-fractions``).
"""

from __future__ import annotations

import re
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

REAL_FOLDERS = {
    "real",
    "reals",
    "mmcelebahq",
    "multimodalcelebahq",
    "celebahq",
    "celebahqreal",
    "pristine",
    "original",
}
CATEGORY_TYPES = {
    "unconditional": "entire_synthesis",
    "uncond": "entire_synthesis",
    "noise2image": "entire_synthesis",
    "text2img": "entire_synthesis",
    "text2image": "entire_synthesis",
    "t2i": "entire_synthesis",
    "textguided": "entire_synthesis",
    "img2img": "entire_synthesis",
    "image2image": "entire_synthesis",
    "i2i": "entire_synthesis",
    "inpaint": "attribute_manipulation",
    "inpainting": "attribute_manipulation",
    "editing": "attribute_manipulation",
    "edit": "attribute_manipulation",
    "faceswap": "face_swap",
    "diffswap": "face_swap",
    "swap": "face_swap",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _split_of(rel: str) -> str:
    for part in rel.split("/")[:-1]:
        split = split_from_name(part)
        if split:
            return split
    return ""


@register_importer("diffusionface", "DiffusionFace: <real folder>/ and <category>/<method>/ folders")
def import_diffusionface(
    root: Path, *, dataset_name: str | None = None, prompt_set: str = "default", progress: bool = False
) -> ImportResult:
    prompts = load_prompts(prompt_set)
    builder = RowBuilder(dataset_name or "diffusionface", root)
    counter = Progress(progress, "scanning DiffusionFace")
    try:
        _scan_top(root, root, builder, counter, prompts)
    finally:
        counter.close()
    return builder.result


def _scan_top(directory: Path, root: Path, builder: RowBuilder, counter: Progress, prompts) -> None:
    for path in builder.child_files(directory):
        builder.skip(relative(path, root), "unexpected file (expected real, category or method folders)")
    for child in builder.child_dirs(directory):
        key = _key(child.name)
        if split_from_name(child.name):
            _scan_top(child, root, builder, counter, prompts)
        elif key in REAL_FOLDERS:
            _add_tree(child, root, builder, counter, label=0)
        elif key in CATEGORY_TYPES:
            for path in builder.child_files(child):
                builder.skip(
                    relative(path, root), f"file directly under {child.name}/ (expected <method>/...)"
                )
            for method_dir in builder.child_dirs(child):
                _add_tree(
                    method_dir,
                    root,
                    builder,
                    counter,
                    label=1,
                    forgery_type=CATEGORY_TYPES[key],
                    family="diffusion",
                    generator=canonical_generator(method_dir.name, prompts),
                    subset=child.name,
                )
        else:
            generator = canonical_generator(child.name, prompts)
            forgery_type, _ = generator_labels(generator, prompts)
            if not forgery_type:
                builder.warn(
                    f"folder {relative(child, root)}/ is not a known category or real folder; imported as "
                    f"fakes of generator {generator!r} with no forgery type"
                )
            _add_tree(
                child,
                root,
                builder,
                counter,
                label=1,
                forgery_type=forgery_type,
                family="diffusion",
                generator=generator,
            )


def _add_tree(
    directory: Path, root: Path, builder: RowBuilder, counter: Progress, label: int, **labels: str
) -> None:
    labels.setdefault("subset", "")
    for path in builder.walk_files(directory, counter):
        rel = relative(path, root)
        if file_kind(path.name) != "image":
            builder.skip(rel, "not an image file")
            continue
        builder.add(rel, label=label, split=_split_of(rel), **labels)
