"""Synthetic benchmark: generation speed and evidence that it is not trivially separable.

Measures, in one run:

1. images/s of ``generate_benchmark`` at 224 px and 64 px, one worker process vs several;
2. the AUC of a global-image-statistics baseline (standardised logistic regression on 11 global
   features: per-channel mean/std, Laplacian energy, JPEG blockiness, spectral slope, high-frequency
   share, gradient) trained on the protocol's training rows (reals + seen generators) and scored on the
   ``seen`` and ``unseen`` test sets, per generator, next to a label-shuffled control (chance level).

Writes ``docs/benchmarks/synth.md`` and ``synth.json`` and refreshes the figures in
``docs/synthetic-benchmark.md``. ``--quick`` is a small smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mfclip.data.decode import load_image_array
from mfclip.data.synth import SEEN_GENERATORS, SYNTH_GENERATORS, UNSEEN_GENERATORS, generate_benchmark
from mfclip.data.synth.stats import FEATURE_NAMES, features_of_files, statistics_baseline

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "synthetic-benchmark.md"
BEGIN, END = "<!-- bench_synth:begin -->", "<!-- bench_synth:end -->"


def throughput(image_size: int, size: int, workers: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = generate_benchmark(
            Path(tmp) / "b", seed=seed, size=size, image_size=image_size, workers=workers, progress=False
        )
        return result.generated / result.seconds


def separability(
    image_size: int, size: int, workers: int, seed: int, cnn_seconds: float = 0.0
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        result = generate_benchmark(
            Path(tmp) / "b", seed=seed, size=size, image_size=image_size, workers=workers, progress=False
        )
        with result.manifest_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        paths = [result.out_dir / r["path"] for r in rows]
        features = features_of_files(paths)
        images = np.stack([load_image_array(p) for p in paths]) if cnn_seconds > 0 else None
    labels = np.array([int(r["label"]) for r in rows])
    split = np.array([r["split"] for r in rows])
    generator = np.array([r["generator"] for r in rows])
    real_test = (split == "test") & (labels == 0)
    train = (split == "train") & np.isin(generator, ["", *SEEN_GENERATORS])
    sets = {
        "seen": real_test | ((split == "test") & np.isin(generator, SEEN_GENERATORS)),
        "unseen": real_test | np.isin(generator, UNSEEN_GENERATORS),
    }
    sets.update({g.name: real_test | ((split == "test") & (generator == g.name)) for g in SYNTH_GENERATORS})
    test_sets = {name: (features[mask], labels[mask]) for name, mask in sets.items()}
    aucs = statistics_baseline(features[train], labels[train], test_sets)
    shuffled = np.random.default_rng(seed).permutation(labels[train])
    control = statistics_baseline(features[train], shuffled, {k: test_sets[k] for k in ("seen", "unseen")})
    aucs.update({f"control_{k}": v for k, v in control.items()})
    if images is not None:
        aucs.update(
            {f"cnn_{k}": v for k, v in srm_cnn(images, labels, train, sets, cnn_seconds, seed).items()}
        )
    return aucs


def srm_cnn(
    images: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    sets: dict[str, np.ndarray],
    seconds: float,
    seed: int,
) -> dict[str, float]:
    """A tiny CNN behind the three fixed SRM high-pass filters, trained for ``seconds`` on the train rows:
    evidence that the local traces are learnable at small sizes on a CPU."""
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn

    torch.manual_seed(seed)
    k1 = [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]
    k2 = [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]
    k3 = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    srm = torch.tensor([k1, k2, k3], dtype=torch.float32) / torch.tensor([4.0, 12.0, 2.0])[:, None, None]
    srm_conv = nn.Conv2d(3, 3, 5, padding=2, bias=False)
    srm_conv.weight.data = srm[:, None].repeat(1, 3, 1, 1) * 25.5  # [0,1] input, residuals in ~0-255/10
    srm_conv.weight.requires_grad_(False)

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    net = nn.Sequential(
        srm_conv, block(3, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64),
        nn.MaxPool2d(2), block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2),
    )  # fmt: skip
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    y = torch.from_numpy(labels).long()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], 2e-3, weight_decay=1e-4)
    rows = np.flatnonzero(train)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        net.train()
        order = rng.permutation(rows)
        for i in range(0, len(order), 32):
            batch = torch.from_numpy(order[i : i + 32])
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net(x[i : i + 256]).softmax(1)[:, 1] for i in range(0, len(x), 256)]).numpy()
    return {name: float(roc_auc_score(labels[mask], scores[mask])) for name, mask in sets.items()}


def _markdown(report: dict) -> str:
    lines = [
        "# Synthetic benchmark: speed and separability",
        "",
        f"Machine: {report['machine']}; {report['cpus']} CPUs available; mode: {report['mode']}.",
        "",
        "## Generation speed (images/s, JPEG files written, includes process start-up)",
        "",
        "| image size | images | 1 worker | " + f"{report['workers']} workers |",
        "|---|---|---|---|",
    ]
    for row in report["throughput"]:
        lines.append(f"| {row['image_size']} px | {row['images']} | {row['one']:.1f} | {row['many']:.1f} |")
    lines += [
        "",
        "## Global-statistics baseline (logistic regression on 11 global features)",
        "",
        "Trained on the protocol's train rows (reals + seen generators); features: "
        f"{', '.join(FEATURE_NAMES)}. The control is the same model fit to shuffled labels.",
        "",
        "| image size | images | seen AUC | unseen AUC | seen - unseen | control seen | control unseen |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["separability"]:
        a = row["auc"]
        lines.append(
            f"| {row['image_size']} px | {row['size']} | {a['seen']:.3f} | {a['unseen']:.3f} | "
            f"{a['seen'] - a['unseen']:+.3f} | {a['control_seen']:.3f} | {a['control_unseen']:.3f} |"
        )
    cnn_rows = [r for r in report["separability"] if "cnn_seen" in r["auc"]]
    if cnn_rows:
        lines += [
            "",
            f"Learnability check: a 4-block CNN behind fixed SRM high-pass filters, trained for "
            f"{report['cnn_seconds']:.0f} s on CPU on the same training rows:",
            "",
            "| image size | images | seen AUC | unseen AUC |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['image_size']} px | {r['size']} | {a['cnn_seen']:.3f} | {a['cnn_unseen']:.3f} |"
            for r in cnn_rows
            for a in [r["auc"]]
        ]
    lines += ["", "Per generator (test reals vs that generator's test fakes; statistics baseline):", ""]
    header = (
        "| generator | protocol | "
        + " | ".join(f"{r['image_size']} px" for r in report["separability"])
        + " |"
    )
    lines += [header, "|---|---|" + "---|" * len(report["separability"])]
    for g in SYNTH_GENERATORS:
        cells = " | ".join(f"{r['auc'][g.name]:.3f}" for r in report["separability"])
        lines.append(f"| {g.name} | {'seen' if g.seen else 'unseen'} | {cells} |")
    return "\n".join(lines) + "\n"


def _update_doc(markdown: str) -> None:
    if not DOC.is_file():
        return
    text = DOC.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return
    body = markdown.split("\n", 2)[2]  # drop the title
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{body}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel workers (default: available CPUs)"
    )
    parser.add_argument(
        "--cnn-seconds", type=float, default=None, help="train time of the SRM-CNN check at 64 px (0: skip)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not refresh docs/synthetic-benchmark.md")
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = args.workers or max(2, min(cpus, 8))
    if args.quick:
        speed_plan = [(224, 96), (64, 192)]
        separability_plan = [(64, 600)]
        cnn_seconds = 20.0 if args.cnn_seconds is None else args.cnn_seconds
    else:
        speed_plan = [(224, 400), (64, 1000)]
        separability_plan = [(64, 2000), (128, 2000)]
        cnn_seconds = 120.0 if args.cnn_seconds is None else args.cnn_seconds

    report: dict = {
        "mode": "quick" if args.quick else "full",
        "machine": f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}",
        "cpus": cpus,
        "workers": workers,
        "seed": args.seed,
        "cnn_seconds": cnn_seconds,
        "throughput": [],
        "separability": [],
    }
    for image_size, n in speed_plan:
        one = throughput(image_size, n, 1, args.seed)
        many = throughput(image_size, n, workers, args.seed)
        report["throughput"].append({"image_size": image_size, "images": n, "one": one, "many": many})
        print(f"speed {image_size:4d} px, {n} images: 1 worker {one:7.1f}/s, {workers} workers {many:7.1f}/s")
    for image_size, n in separability_plan:
        start = time.perf_counter()
        cnn = cnn_seconds if image_size == 64 else 0.0
        aucs = separability(image_size, n, workers, args.seed, cnn)
        report["separability"].append({"image_size": image_size, "size": n, "auc": aucs})
        print(
            f"AUC {image_size:4d} px, {n} images: seen {aucs['seen']:.3f}  unseen {aucs['unseen']:.3f}  "
            f"control {aucs['control_seen']:.3f}/{aucs['control_unseen']:.3f}  "
            f"({time.perf_counter() - start:.0f} s)"
        )
    markdown = _markdown(report)
    print()
    print(markdown)
    out = ROOT / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth.md").write_text(markdown, encoding="utf-8")
    (out / "synth.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.no_doc:
        _update_doc(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
