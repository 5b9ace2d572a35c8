"""A toy face-forgery data set for the training tests: tiny PNGs, a manifest and a protocol.

"Real" images are smooth random colour fields; "fake" ones add a faint 2-pixel checkerboard, the trace of
a transposed-convolution up-sampler, so a tiny model can learn to tell them apart in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

GENERATORS = ("SDXL", "DiffFace")


def _image(rng: np.random.Generator, size: int, fake: bool) -> np.ndarray:
    coarse = rng.uniform(40, 215, (4, 4, 3))
    field = np.kron(coarse, np.ones((size // 4, size // 4, 1)))
    field += rng.normal(0, 3, field.shape)
    if fake:
        yy, xx = np.mgrid[:size, :size]
        field += np.where((yy + xx) % 2 == 0, 12.0, -12.0)[..., None]
    return np.clip(field, 0, 255).astype(np.uint8)


def write_toy_dataset(
    root: Path, per_class: dict[str, int] | None = None, size: int = 32, seed: int = 0
) -> Path:
    """Write PNGs under ``root`` and ``root/manifest.csv``; returns the manifest path.

    ``per_class``: images per class in each split (default 16 train, 8 val, 4 test).
    """
    counts = per_class or {"train": 16, "val": 8, "test": 4}
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in counts.items():
        for label in (0, 1):
            for i in range(count):
                generator = GENERATORS[i % len(GENERATORS)] if label else ""
                relative = f"{split}/{'fake' if label else 'real'}/{generator or 'camera'}_{i:03d}.png"
                path = root / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_image(rng, size, bool(label))).save(path)
                rows.append(
                    {
                        "path": relative,
                        "label": label,
                        "split": split,
                        "dataset": "toy",
                        "forgery_type": ("entire_synthesis" if generator == "SDXL" else "face_swap")
                        if label
                        else "",
                        "family": "diffusion" if label else "",
                        "generator": generator,
                        "video_id": "",
                    }
                )
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def write_toy_protocol(path: Path, manifest: str = "manifest.csv") -> Path:
    """A protocol with two variants (train on one generator each), validated on the same generator."""
    protocol = {
        "name": "toy-cross-generator",
        "synthetic": True,
        "manifest": manifest,
        "train": {"split": "train"},
        "val": {"split": "val"},
        "test": {"all": {"split": "test"}},
        "variants": {
            "sdxl": {"train": {"generators": ["SDXL"]}, "val": {"generators": ["SDXL"]}},
            "diffface": {"train": {"generators": ["DiffFace"]}, "val": {"generators": ["DiffFace"]}},
        },
    }
    path.write_text(yaml.safe_dump(protocol, sort_keys=False), encoding="utf-8")
    return path


# The production `tiny` preset shrunk for tests: 32 px, one-layer towers, short prompts of work, no workers.
SMALL = [
    "model.overrides.image_size=32",
    "model.overrides.vision.clip_vit.layers=1",
    "model.overrides.text.layers=1",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "data.num_workers=0",
    "optim.lr=1e-3",
    "optim.lr_pretrained=1e-3",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logging.tensorboard=false",
]
