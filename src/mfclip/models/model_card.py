"""The model card (README.md) written into every checkpoint directory.

The card is generated from the model config and the checkpoint metadata. It opens with Hugging Face Hub
front matter (:func:`hub_front_matter`: library, tags, licence, datasets, evaluation results, the
synthetic-data flag), so the same file renders as the model page when the checkpoint is pushed.

Metadata keys it reads, all optional: ``name``, ``train_manifest``, ``datasets`` (list), ``protocol`` (name
or mapping), ``metrics`` (``{test set: {metric: value}}`` or ``{metric: value}``), ``synthetic`` (bool:
trained on the synthetic benchmark), ``clip_weights`` (the pretrained initialisation), ``epochs``, ``seed``,
``notes``, ``license`` (the Hub licence identifier, default ``other``). Every other metadata key is listed
under "Other metadata".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["card_with_front_matter", "hub_front_matter", "is_synthetic", "render_model_card"]

# Tags every mfclip model page carries on the Hub.
HUB_TAGS = ("mfclip", "deepfake-detection", "face-forgery-detection", "image-classification")
SYNTHETIC_TAG = "synthetic-data"
DEFAULT_LICENSE = "other"

# Config entries worth a line of their own in the architecture section (dotted paths), when present.
_KEY_SETTINGS = (
    ("type", "model type"),
    ("image_size", "input size (px)"),
    ("input.resize", "input resize"),
    ("input.interpolation", "input interpolation"),
    ("input.face.detector", "face crop detector"),
    ("input.face.align", "face crop alignment"),
    ("input.face.size", "face crop size (px)"),
    ("embed_dim", "feature dimension"),
    ("vision.global_branch", "global image branch"),
    ("vision.clip_vit.arch", "CLIP image tower architecture"),
    ("vision.clip_vit.width", "CLIP image tower width"),
    ("vision.clip_vit.layers", "CLIP image tower layers"),
    ("vision.clip_vit.patch_size", "CLIP image tower patch size"),
    ("vision.clip_vit.quick_gelu", "CLIP image tower QuickGELU"),
    ("vision.image_branch", "image branch on"),
    ("vision.noise_branch", "noise branch on"),
    ("vision.noise.patch_mode", "noise branch patch"),
    ("vision.fusion", "branch fusion"),
    ("text.arch", "CLIP text tower architecture"),
    ("text.width", "CLIP text tower width"),
    ("text.layers", "CLIP text tower layers"),
    ("text.pooling", "prompt pooling"),
    ("text.levels", "prompt levels"),
    ("spa.mode", "sample pair attention"),
    ("losses.cmc", "ℓcmc weight"),
    ("losses.kl", "ℓkl weight"),
    ("backbone", "backbone"),
)
_KNOWN_METADATA = {
    "name",
    "train_manifest",
    "datasets",
    "protocol",
    "metrics",
    "synthetic",
    "clip_weights",
    "epochs",
    "seed",
    "notes",
    "license",
}


def is_synthetic(metadata: Mapping[str, Any]) -> bool:
    """Whether the metadata says the model was trained on the synthetic benchmark."""
    if metadata.get("synthetic") is True:
        return True
    datasets = metadata.get("datasets") or []
    if isinstance(datasets, str):
        datasets = [datasets]
    return any("synth" in str(d).lower() for d in datasets)


def render_model_card(
    model_config: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    parameter_count: int,
    trainable_count: int | None = None,
    model_class: str = "",
    mfclip_version: str = "",
) -> str:
    """Markdown text of the model card for a checkpoint with this config and metadata (front matter first)."""
    name = _card_name(model_config, metadata)
    synthetic = is_synthetic(metadata)
    out: list[str] = [hub_front_matter(model_config, metadata).rstrip("\n"), f"# {name}", ""]
    if synthetic:
        out += [
            "> **⚠ Trained on synthetic data.** This model was trained on mfclip's synthetic face-forgery",
            "> benchmark, not on real photographs or real generators. Its scores say nothing about real",
            "> diffusion or GAN fakes; use it to test pipelines and demos only.",
            "",
        ]
    description = model_config.get("description")
    out += [
        f"A face-forgery detector built with mfclip{f' {mfclip_version}' if mfclip_version else ''}. "
        "Given an RGB face image it returns P(fake).",
        "",
    ]
    if description:
        out += [str(description), ""]

    out += ["## Architecture", ""]
    if model_class:
        out.append(f"- class: `{model_class}`")
    for path, label in _KEY_SETTINGS:
        value = _lookup(model_config, path)
        if value is not None:
            out.append(f"- {label}: `{_inline(value)}`")
    total = f"{parameter_count:,}"
    if trainable_count is not None and trainable_count != parameter_count:
        total += f" ({trainable_count:,} trainable)"
    out += [f"- parameters: {total}", ""]
    out += [
        "<details><summary>Full model config</summary>",
        "",
        "```yaml",
        yaml.safe_dump(
            dict(model_config), sort_keys=False, default_flow_style=None, allow_unicode=True
        ).rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]

    out += ["## Training data and protocol", ""]
    training = []
    if "train_manifest" in metadata:
        training.append(f"- training manifest: `{metadata['train_manifest']}`")
    if metadata.get("datasets"):
        datasets = metadata["datasets"]
        datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        training.append(f"- datasets: {', '.join(str(d) for d in datasets)}")
    if "synthetic" in metadata or synthetic:
        training.append(f"- synthetic benchmark: {'**yes**' if synthetic else 'no'}")
    if "protocol" in metadata:
        training.append(f"- protocol: {_inline(metadata['protocol'])}")
    if "clip_weights" in metadata:
        training.append(f"- initialised from CLIP weights: `{metadata['clip_weights']}`")
    for key, label in (("epochs", "epochs"), ("seed", "seed")):
        if key in metadata:
            training.append(f"- {label}: {metadata[key]}")
    out += training or ["No training information was recorded with this checkpoint."]
    out.append("")

    out += ["## Evaluation", ""]
    out += _metrics_section(metadata.get("metrics"))
    out.append("")

    out += [
        "## Intended use",
        "",
        "Research on the detection of diffusion-generated and manipulated face images, and screening of",
        "face images as one signal among several. Scores are probabilities from one model: calibrate the",
        "decision threshold on data like yours before acting on them.",
        "",
        "## Limitations",
        "",
        "- Detectors of generated faces degrade on generators, datasets, compression and resizing unlike",
        "  their training data; the metrics above hold only for the test sets named there.",
        "- The model expects a face crop like those it was trained on (see the training manifest); other",
        "  inputs give meaningless scores.",
        "- A low P(fake) is not proof that an image is authentic.",
    ]
    if synthetic:
        out.append("- Trained on synthetic data only: not suitable for judging real images.")
    out.append("")

    out += [
        "## How to load",
        "",
        "```python",
        "from mfclip.models.checkpoint import load_checkpoint",
        "",
        'model, metadata = load_checkpoint("path/to/this/directory")',
        "p_fake = model.predict_proba(images)  # images: float (B, 3, S, S) in [0, 1], RGB",
        "```",
        "",
        f"`S` is the input size ({_lookup(model_config, 'image_size') or 'see the config'} px); the model "
        "normalises its input itself. `mfclip.Detector.from_pretrained(directory)` adds face cropping, "
        "resizing and batching for image files and videos.",
        "",
    ]

    if metadata.get("notes"):
        out += ["## Notes", "", str(metadata["notes"]), ""]
    extra = {k: v for k, v in metadata.items() if k not in _KNOWN_METADATA}
    if extra:
        out += ["## Other metadata", "", "```json", json.dumps(extra, indent=2, default=str), "```", ""]
    return "\n".join(out)


def _metrics_section(metrics: Any) -> list[str]:
    if not metrics:
        return ["No evaluation results were recorded with this checkpoint."]
    if not isinstance(metrics, Mapping):
        return [f"{_inline(metrics)}"]
    nested = {k: v for k, v in metrics.items() if isinstance(v, Mapping)}
    flat = {k: v for k, v in metrics.items() if not isinstance(v, Mapping)}
    rows: dict[str, Mapping[str, Any]] = {}
    if flat:
        rows["all"] = flat
    rows.update(nested)
    columns: list[str] = []
    for values in rows.values():
        columns += [str(c) for c in values if str(c) not in columns]
    lines = [
        "| test set | " + " | ".join(_cell(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, values in rows.items():
        cells = [_number(values.get(c, values.get(c.lower(), ""))) for c in columns]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    return lines


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Mapping):
        return _cell(json.dumps(value, default=str))
    return _cell(str(value))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------------
# Hugging Face Hub front matter
# ---------------------------------------------------------------------------------------------------


def _card_name(model_config: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    return str(metadata.get("name") or model_config.get("name") or model_config.get("type") or "model")


def hub_front_matter(
    model_config: Mapping[str, Any], metadata: Mapping[str, Any], license: str | None = None
) -> str:
    """The YAML front matter (``---`` ... ``---``) the Hugging Face Hub reads from a model card.

    Built with ``huggingface_hub.ModelCardData``: ``library_name: mfclip``, tags (plus ``synthetic-data``
    and ``synthetic_training_data: true`` for a model trained on the synthetic benchmark), the licence
    (``license``, else metadata ``license``, else ``other``), ``datasets``, the metric names and a
    ``model-index`` with one result per test set and metric, and ``base_model`` when ``clip_weights`` is a
    Hub repository (``hf-hub:owner/name``).
    """
    from huggingface_hub import EvalResult, ModelCardData

    name = _card_name(model_config, metadata)
    synthetic = is_synthetic(metadata)
    tags = list(HUB_TAGS)
    model_type = str(model_config.get("type") or "")
    if model_type and model_type not in tags:
        tags.append(model_type)
    if synthetic:
        tags.append(SYNTHETIC_TAG)
    datasets = metadata.get("datasets") or []
    datasets = [str(datasets)] if isinstance(datasets, str) else [str(d) for d in datasets]
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Face forgery detection",
            dataset_type=test_set,
            dataset_name=test_set,
            metric_type=metric,
            metric_value=value,
        )
        for test_set, metric, value in _metric_values(metadata.get("metrics"))
    ]
    extra: dict[str, Any] = {"synthetic_training_data": True} if synthetic else {}
    data = ModelCardData(
        library_name="mfclip",
        license=str(license or metadata.get("license") or DEFAULT_LICENSE),
        tags=tags,
        datasets=datasets or None,
        metrics=sorted({metric for _, metric, _ in _metric_values(metadata.get("metrics"))}) or None,
        pipeline_tag="image-classification",
        base_model=_hub_base_model(metadata.get("clip_weights")),
        model_name=name if results else None,
        eval_results=results or None,
        **extra,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def card_with_front_matter(card: str, document: Mapping[str, Any], license: str | None = None) -> str:
    """``card`` (a model card's text) with its front matter rewritten from a checkpoint's config.json.

    An empty ``card`` is generated from the document first, so a checkpoint without README.md still gets one.
    """
    model_config = document.get("model") or {}
    metadata = document.get("metadata") or {}
    if not card.strip():
        card = render_model_card(
            model_config,
            metadata,
            parameter_count=int((document.get("weights") or {}).get("parameters") or 0),
            mfclip_version=str(document.get("mfclip_version") or ""),
        )
    return hub_front_matter(model_config, metadata, license) + strip_front_matter(card).lstrip("\n")


def strip_front_matter(card: str) -> str:
    """``card`` without a leading ``---`` YAML block."""
    if not card.startswith("---"):
        return card
    lines = card.splitlines(keepends=True)
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r\n") == "---":
            return "".join(lines[index + 1 :])
    return card


def _metric_values(metrics: Any) -> list[tuple[str, str, float]]:
    """``(test set, metric, value)`` for every numeric metric (``{set: {metric: v}}`` or ``{metric: v}``)."""
    if not isinstance(metrics, Mapping):
        return []
    rows: list[tuple[str, str, float]] = []
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            rows += [
                (str(key), str(m), float(v))
                for m, v in value.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            ]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(("all", str(key), float(value)))
    return rows


def _hub_base_model(clip_weights: Any) -> str | None:
    """The Hub repository of the CLIP weights a model started from, when given as ``hf-hub:owner/name``."""
    if not isinstance(clip_weights, str) or not clip_weights.startswith("hf-hub:"):
        return None
    repo = clip_weights.removeprefix("hf-hub:").partition("@")[0]
    return repo if re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*", repo) else None
