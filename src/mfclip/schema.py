"""The names every part shares: manifest columns, split names, class names and how a score is labelled.

This module imports nothing (of mfclip or anyone else), so ``data``, ``metrics``, ``inference`` and
``serve`` all import these definitions from here without depending on one another. Manifests themselves
(reading, validation, selection) are :mod:`mfclip.data.manifest`.
"""

from __future__ import annotations

#: Free-text manifest columns describing a row (empty: unknown).
DESCRIPTIVE_COLUMNS = ("dataset", "forgery_type", "family", "generator", "video_id")
#: The manifest columns after ``path``: what a row says about its image.
LABEL_COLUMNS = ("label", "split", *DESCRIPTIVE_COLUMNS)
#: Every standard manifest column, in the order manifests are written.
MANIFEST_COLUMNS = ("path", *LABEL_COLUMNS)
#: The columns a manifest cannot do without.
REQUIRED_COLUMNS = ("path", "label", "split")
#: The split names, in the order they are listed.
SPLITS = ("train", "val", "test")
#: The name of label 0 and of label 1, as predictions name them and as people may type them.
CLASS_NAMES = ("real", "fake")
#: Label names accepted where people type labels (importer metadata, ``mfclip preprocess --label``).
LABEL_NAMES = {name: label for label, name in enumerate(CLASS_NAMES)}


def class_name(p_fake: float, threshold: float) -> str:
    """The predicted class: ``fake`` when ``p_fake >= threshold``, else ``real``."""
    return CLASS_NAMES[1] if p_fake >= threshold else CLASS_NAMES[0]


__all__ = [
    "CLASS_NAMES",
    "DESCRIPTIVE_COLUMNS",
    "LABEL_COLUMNS",
    "LABEL_NAMES",
    "MANIFEST_COLUMNS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "class_name",
]
