"""`mfclip eval` / evaluate(): scoring, outputs, degradations, resuming, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mfclip.data.manifest import ManifestError
from mfclip.engine.evaluate import EvaluationError, build_test_sets, default_eval_dir, evaluate
from mfclip.metrics import load_predictions
from mfclip.models.baselines import ClipBaseline
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.utils.config import ConfigError

GENERATORS = {"GenA": ("entire_synthesis", "diffusion"), "GenB": ("face_swap", "gan")}


def _image(rng: np.random.Generator, fake: bool) -> Image.Image:
    base = rng.integers(60, 200, size=(1, 1, 3)) + rng.normal(0, 12, size=(40, 48, 3))
    if fake:  # a periodic trace, like decoder up-sampling
        base[::2, ::2] += 25
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of 28 small images: test reals and fakes of two generators, a few train/val rows."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = []
    for split, count in (("train", 2), ("val", 2), ("test", 6)):
        for i in range(count):
            path = f"real/{split}_{i}.png"
            (root / "real").mkdir(exist_ok=True)
            _image(rng, False).save(root / path)
            rows.append([path, 0, split, "toy", "", "", "", f"r{i // 2}"])
            for generator, (forgery_type, family) in GENERATORS.items():
                (root / generator).mkdir(exist_ok=True)
                path = f"{generator}/{split}_{i}.jpg"
                _image(rng, True).save(root / path, quality=90)
                rows.append([path, 1, split, "toy", forgery_type, family, generator, f"{generator}{i // 2}"])
    columns = ["path", "label", "split", "dataset", "forgery_type", "family", "generator", "video_id"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "manifest.csv", index=False)
    (root / "protocol.yaml").write_text(
        "name: toy\nmanifest: manifest.csv\n"
        "train: {split: train, generators: [GenA]}\nval: {split: val, generators: [GenA]}\n"
        "test:\n  seen: {split: test, generators: [GenA]}\n  unseen: {split: test, generators: [GenB]}\n"
        "variants:\n  a: {}\n  b:\n    test: {seen: {generators: [GenB]}, unseen: {generators: [GenA]}}\n",
        encoding="utf-8",
    )
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN/ with a best/ checkpoint of a tiny CLIP probe (as training writes it)."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = create_model("clip-probe-tiny")
    metadata = {"protocol": {"name": "toy", "variant": "b"}, "synthetic": True}
    save_checkpoint(model, run / "best", metadata=metadata)
    (run / "train_summary.json").write_text("{}", encoding="utf-8")
    return run


def _expected_scores(run: Path, root: Path, paths: list[str]) -> np.ndarray:
    from mfclip.data.transforms import ImageTransform
    from mfclip.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(run / "best")
    transform = ImageTransform(model.image_size)
    images = torch.stack([transform(Image.open(root / p).convert("RGB")) for p in paths])
    return model.eval().predict_proba(images).numpy()


def test_manifest_evaluation_writes_predictions_metrics_and_reports(
    dataset: Path, run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = evaluate(
        run_dir / "best", manifest=dataset / "manifest.csv", out_dir=out, batch_size=5, workers=0
    )
    assert list(result.metrics) == ["test"] and result.scored == ["test"]
    predictions = load_predictions(out / "test" / "predictions.parquet")
    manifest = pd.read_csv(dataset / "manifest.csv")
    expected_rows = manifest.index[manifest["split"] == "test"].tolist()
    assert predictions["row"].tolist() == expected_rows  # manifest order, every test row once
    assert list(predictions.columns[:3]) == ["path", "label", "p_fake"]
    assert {"generator", "forgery_type", "video_id", "dataset"} <= set(predictions.columns)
    assert np.allclose(
        predictions["p_fake"], _expected_scores(run_dir, dataset, predictions["path"].tolist()), atol=1e-5
    )
    for name in ("metrics.json", "report.md", "roc.png", "histogram.png", "eval_state.json"):
        assert (out / "test" / name).is_file(), name
    for name in ("metrics.json", "report.md", "evaluation.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 18 and set(metrics["groups"]["generator"]) == {"GenA", "GenB"}
    assert metrics["video"]["n_videos"] == 9
    assert not (out / "test" / ".partial").exists()
    assert result.table()["test_set"].tolist() == ["test"]


def test_protocol_evaluation_uses_the_trained_variant_and_the_default_run_eval_dir(
    dataset: Path, run_dir: Path
) -> None:
    assert default_eval_dir(run_dir / "best") == run_dir / "eval"
    result = evaluate(
        run_dir / "best", protocol=dataset / "protocol.yaml", batch_size=8, workers=0, plots=False
    )
    assert result.out_dir == run_dir / "eval"
    # The checkpoint records variant b, where "seen" is GenB.
    seen = load_predictions(run_dir / "eval" / "seen" / "predictions.parquet")
    assert set(seen.loc[seen["label"] == 1, "generator"]) == {"GenB"}
    assert json.loads((run_dir / "eval" / "evaluation.json").read_text())["variant"] == "b"
    again = evaluate(
        run_dir / "best",
        protocol=dataset / "protocol.yaml",
        variant="a",
        out_dir=run_dir / "eval-a",
        plots=False,
    )
    seen_a = load_predictions(again.out_dir / "seen" / "predictions.parquet")
    assert set(seen_a.loc[seen_a["label"] == 1, "generator"]) == {"GenA"}


def test_degradations_are_scored_as_extra_test_sets(dataset: Path, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = evaluate(
        run_dir / "best",
        manifest=dataset / "manifest.csv",
        out_dir=out,
        perturb=["jpeg30", "noise20"],
        workers=0,
        plots=False,
    )
    assert list(result.metrics) == ["test", "test+jpeg30", "test+noise20"]
    clean = load_predictions(out / "test" / "predictions.parquet")["p_fake"].to_numpy()
    noisy = load_predictions(out / "test+noise20" / "predictions.parquet")["p_fake"].to_numpy()
    assert not np.allclose(clean, noisy)
    assert result.metrics["test+jpeg30"]["perturbation"]["quality"] == 30
    table = (out / "robustness.md").read_text()
    assert "| test |" in table and "jpeg30" in table and "noise20" in table
    # Deterministic: a fresh evaluation elsewhere gives the same degraded scores.
    other = evaluate(
        run_dir / "best",
        manifest=dataset / "manifest.csv",
        out_dir=tmp_path / "again",
        perturb=["noise20"],
        workers=0,
        plots=False,
    )
    assert other.scored == ["test", "test+noise20"]
    assert np.array_equal(
        noisy,
        load_predictions(tmp_path / "again" / "test+noise20" / "predictions.parquet")["p_fake"].to_numpy(),
    )


def test_a_complete_evaluation_is_skipped_and_an_interrupted_one_resumes(
    dataset: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "eval"
    protocol = dataset / "protocol.yaml"
    calls = {"images": 0}
    forward = ClipBaseline.forward

    def counting(self, images, *args, **kwargs):
        calls["images"] += images.shape[0]
        if calls.get("fail_after") is not None and calls["images"] > calls["fail_after"]:
            raise KeyboardInterrupt
        return forward(self, images, *args, **kwargs)

    monkeypatch.setattr(ClipBaseline, "forward", counting)
    calls["fail_after"] = 8  # dies in the third batch of "seen" (12 rows, batches of 4)
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            run_dir / "best",
            protocol=protocol,
            variant="a",
            out_dir=out,
            batch_size=4,
            plots=False,
        )
    log = out / "seen" / ".partial" / "scores.csv"
    assert len(log.read_text().splitlines()) == 1 + 8 and not (out / "seen" / "metrics.json").exists()
    with log.open("a") as handle:
        handle.write("9,0.5")  # a record cut short by the kill: dropped, and its row scored again

    calls.update(images=0, fail_after=None)
    result = evaluate(
        run_dir / "best", protocol=protocol, variant="a", out_dir=out, batch_size=4, plots=False
    )
    assert calls["images"] == 4 + 12  # the rest of "seen", then all of "unseen"
    assert not log.parent.exists()
    assert result.scored == ["seen", "unseen"]
    reference = evaluate(
        run_dir / "best", protocol=protocol, variant="a", out_dir=tmp_path / "ref", batch_size=12, plots=False
    )
    pd.testing.assert_frame_equal(
        load_predictions(out / "seen" / "predictions.parquet"),
        load_predictions(reference.out_dir / "seen" / "predictions.parquet"),
    )

    calls["images"] = 0
    again = evaluate(run_dir / "best", protocol=protocol, variant="a", out_dir=out, plots=False)
    assert again.resumed == ["seen", "unseen"] and calls["images"] == 0
    assert again.metrics["seen"]["overall"]["auc"] == pytest.approx(result.metrics["seen"]["overall"]["auc"])
    # New metric settings reuse the saved predictions: nothing is scored again.
    with_ci = evaluate(
        run_dir / "best", protocol=protocol, variant="a", out_dir=out, bootstrap=50, plots=False
    )
    assert calls["images"] == 0 and "ci" in with_ci.metrics["seen"]["overall"]


def test_unreadable_images_are_left_out_and_listed(dataset: Path, run_dir: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(dataset / "manifest.csv")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    manifest.loc[len(manifest)] = [str(broken.relative_to(tmp_path)), 1, "test", "toy", "", "", "GenA", ""]
    for path in manifest["path"][:-1]:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((dataset / path).read_bytes())
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    result = evaluate(
        run_dir / "best",
        manifest=tmp_path / "manifest.csv",
        out_dir=tmp_path / "eval",
        workers=0,
        plots=False,
    )
    assert result.metrics["test"]["overall"]["n"] == 18 and result.metrics["test"]["unreadable"] == 1
    unreadable = pd.read_csv(tmp_path / "eval" / "test" / "unreadable.csv")
    assert unreadable["path"].tolist() == ["broken.png"] and unreadable["row"].tolist() == [len(manifest) - 1]


def test_bad_requests_fail_with_clear_messages(dataset: Path, run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="give a protocol or a manifest"):
        build_test_sets()
    with pytest.raises(ConfigError, match="unknown split 'holdout'"):
        build_test_sets(manifest=dataset / "manifest.csv", split="holdout")
    only_train = tmp_path / "train.csv"
    pd.read_csv(dataset / "manifest.csv").query("split == 'train'").to_csv(only_train, index=False)
    with pytest.raises(
        ManifestError,
        match=r"^split: 'test' does not occur among the rows of .*train\.csv \(present: train\)",
    ):
        build_test_sets(manifest=only_train, root=dataset)
    with pytest.raises(EvaluationError, match=r"missing\.csv: manifest not found"):
        build_test_sets(manifest=tmp_path / "missing.csv")
    with pytest.raises(EvaluationError, match="no such checkpoint"):
        evaluate(tmp_path / "nothing", manifest=dataset / "manifest.csv")
    bundled = build_test_sets("diff-cross-forgery", manifest=_diff_like(tmp_path), variant="fs")
    assert [t.name for t in bundled] == ["t2i", "i2i", "fs", "fe"]
    with pytest.raises(
        ManifestError,
        match=r"protocol 'diff-cross-forgery': test\.i2i\.generators: 'SDXL_Refine', 'LoRA', "
        r"'DreamBooth', 'FreeDoM_I' do not occur among the fake rows of split test of .*diff10\.csv "
        r"\(present: CoDiff, DCFace, DiffFace, FreeDoM_T, HPS, Imagic, Midjourney, SDXL, cycle_diff\)$",
    ):
        build_test_sets(
            "diff-cross-forgery", manifest=_diff_like(tmp_path, drop="LoRA DreamBooth SDXL_Refine FreeDoM_I")
        )
    # A misspelt name used to select nothing silently, or a set without the generator it names.
    with pytest.raises(
        ManifestError, match=r"test\.unseen\.generators: 'GenC' does not occur .* \(present: GenA, GenB\)"
    ):
        build_test_sets(_protocol_with(tmp_path, dataset, "unseen: {split: test, generators: [GenB, GenC]}"))
    with pytest.raises(ConfigError, match=r"test\.seen\.split: Value error, unknown split 'tset'"):
        build_test_sets(_protocol_with(tmp_path, dataset, "seen: {split: tset, generators: [GenA]}"))
    with pytest.raises(
        ManifestError,
        match=r"test\.seen\.datasets: 'tyo' does not occur .* \(present: toy\); did you mean 'toy'\?$",
    ):
        build_test_sets(_protocol_with(tmp_path, dataset, "seen: {split: test, datasets: [tyo]}"))
    # A test set whose filters leave it no fakes has no AUC: refused before scoring.
    with pytest.raises(EvaluationError, match=r"test set 'seen' .* selects no fake rows"):
        build_test_sets(
            _protocol_with(
                tmp_path, dataset, "seen: {split: test, generators: [GenA], exclude_generators: [GenA]}"
            )
        )
    with pytest.raises(EvaluationError, match="reads 3 manifests"):
        build_test_sets("cross-dataset", manifest=dataset / "manifest.csv")


def test_rows_left_unscored_are_named_by_the_row_a_spreadsheet_shows(
    dataset: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mfclip.engine.evaluate as evaluation

    manifest = pd.read_csv(dataset / "manifest.csv")
    first_test = int(manifest.index[manifest["split"] == "test"][0])
    read_scores = evaluation.read_scores

    def losing_one_row(log):  # as if the partial scores had lost a row
        scores = read_scores(log)
        return scores[scores["row"] != first_test]

    monkeypatch.setattr(evaluation, "read_scores", losing_one_row)
    spreadsheet_row = first_test + 2  # the header is row 1
    with pytest.raises(
        EvaluationError,
        match=rf"1 row\(s\) were not scored \(e\.g\. row {spreadsheet_row} of manifest\.csv\)",
    ):
        evaluate(
            run_dir / "best",
            manifest=dataset / "manifest.csv",
            out_dir=tmp_path / "eval",
            workers=0,
            plots=False,
            progress=False,
        )


def _protocol_with(tmp_path: Path, dataset: Path, test_set: str) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(
        f"name: toy\nmanifest: {dataset / 'manifest.csv'}\ntest:\n  {test_set}\n", encoding="utf-8"
    )
    return path


def _diff_like(tmp_path: Path, drop: str = "") -> Path:
    generators = (
        "Midjourney SDXL FreeDoM_T HPS SDXL_Refine LoRA DreamBooth FreeDoM_I DiffFace DCFace Imagic "
        "cycle_diff CoDiff"
    )
    rows = [["real/0.png", 0, "test", "diff", ""]]
    rows += [[f"{g}/0.png", 1, "test", "diff", g] for g in generators.split() if g not in drop.split()]
    path = tmp_path / f"diff{len(rows)}.csv"
    pd.DataFrame(rows, columns=["path", "label", "split", "dataset", "generator"]).to_csv(path, index=False)
    return path


def test_cli_eval_prints_the_table_and_where_it_wrote(
    dataset: Path, run_dir: Path, tmp_path: Path, capsys
) -> None:
    from mfclip.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "eval",
                "--checkpoint",
                str(run_dir / "best"),
                "--manifest",
                str(dataset / "manifest.csv"),
                "--out",
                str(tmp_path / "cli"),
                "--perturb",
                "blur2",
                "--no-plots",
                "--no-progress",
                "--workers",
                "0",
            ]
        )
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert "test+blur2" in output and str(tmp_path / "cli") in output
    assert (tmp_path / "cli" / "test+blur2" / "metrics.json").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--checkpoint", str(run_dir / "best"), "--protocol", "no-such-protocol"])
    assert exit_info.value.code == 2
    assert "protocol 'no-such-protocol' not found" in capsys.readouterr().err


def test_a_run_directory_means_its_best_model(
    dataset: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mfclip.cli.main import main

    args = ["--manifest", str(dataset / "manifest.csv"), "--out", str(tmp_path / "cli"), "--no-plots"]
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--checkpoint", str(run_dir), *args, "--no-progress", "--workers", "0"])
    assert exit_info.value.code == 0
    output = "".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"isatrainingrun:scoreditsbestmodel{run_dir / 'best'}" in output
    evaluation = json.loads((tmp_path / "cli" / "evaluation.json").read_text())
    assert evaluation["checkpoint"] == str(run_dir / "best")

    unvalidated = tmp_path / "unvalidated"
    (unvalidated / "checkpoints").mkdir(parents=True)
    (unvalidated / "config.yaml").write_text("{}", encoding="utf-8")
    with pytest.raises(EvaluationError, match=r"unvalidated: this training run has no best/ model"):
        evaluate(unvalidated, manifest=dataset / "manifest.csv")


def test_an_evaluation_changed_meanwhile_starts_its_partial_scores_over_and_one_run_holds_the_folder(
    dataset: Path, run_dir: Path, tmp_path: Path
) -> None:
    from mfclip.utils.jobs import JobLock, JobLockedError

    out = tmp_path / "eval"
    partial = out / "test" / ".partial"
    partial.mkdir(parents=True)
    # Scores logged for other rows (another manifest): not mixed in, the test set is scored afresh.
    (partial / "settings.json").write_text(
        json.dumps({"format": "mfclip-evaluation-scores", "settings": {"rows": "other"}})
    )
    (partial / "scores.csv").write_text("row,p_fake,error\n12,0.999,\n")
    with (
        JobLock(out / ".lock", "evaluation", out),
        pytest.raises(JobLockedError, match=f"{out} is in use by another evaluation run"),
    ):
        evaluate(run_dir / "best", manifest=dataset / "manifest.csv", out_dir=out, workers=0, plots=False)
    evaluate(run_dir / "best", manifest=dataset / "manifest.csv", out_dir=out, workers=0, plots=False)
    predictions = load_predictions(out / "test" / "predictions.parquet")
    assert predictions["row"].tolist()[0] == 12 and 0.999 not in predictions["p_fake"].tolist()
    assert not partial.exists() and not (out / ".lock").exists()


def test_the_same_rows_under_another_root_are_scored_again(
    dataset: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores belong to the images: another --root (a recompressed copy, say) is scored afresh, the same
    root written relative or absolute is not; a kill after the last file leaves no partial scores."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    for image in copy.glob("*/*.png"):
        Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(90).save(image)
    manifest, out = dataset / "manifest.csv", tmp_path / "eval"
    first = evaluate(run_dir / "best", manifest=manifest, root=dataset, out_dir=out, workers=0, plots=False)
    before = load_predictions(out / "test" / "predictions.parquet")
    monkeypatch.chdir(tmp_path)
    other = evaluate(run_dir / "best", manifest=manifest, root="copy", out_dir=out, workers=0, plots=False)
    assert first.scored == other.scored == ["test"]
    after = load_predictions(out / "test" / "predictions.parquet")
    assert not np.allclose(before["p_fake"], after["p_fake"])  # the copy's images, not the first scores
    (out / "test" / ".partial").mkdir()  # as a kill just before its removal leaves it
    again = evaluate(run_dir / "best", manifest=manifest, root=copy, out_dir=out, workers=0, plots=False)
    assert again.resumed == ["test"] and not (out / "test" / ".partial").exists()


def test_partial_scores_and_stamps_of_the_previous_format_are_resumed(
    dataset: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted evaluation written by the previous release (parquet chunks beside a bare
    state.json) continues from its chunks; a complete one (bare eval_state.json) is not scored again."""
    manifest = dataset / "manifest.csv"
    reference = evaluate(
        run_dir / "best", manifest=manifest, out_dir=tmp_path / "ref", workers=0, plots=False
    )
    scored = load_predictions(tmp_path / "ref" / "test" / "predictions.parquet")
    stamp = json.loads((tmp_path / "ref" / "test" / "eval_state.json").read_text())["settings"]

    out = tmp_path / "old"
    partial = out / "test" / ".partial"
    partial.mkdir(parents=True)
    (partial / "state.json").write_text(json.dumps(stamp["scoring"]))
    first = scored.iloc[:10]
    pd.DataFrame({"row": first["row"], "p_fake": first["p_fake"].astype("float64"), "error": ""}).to_parquet(
        partial / "chunk-000000.parquet", index=False
    )
    calls = {"images": 0}
    forward = ClipBaseline.forward

    def counting(self, images, *args, **kwargs):
        calls["images"] += images.shape[0]
        return forward(self, images, *args, **kwargs)

    monkeypatch.setattr(ClipBaseline, "forward", counting)
    result = evaluate(run_dir / "best", manifest=manifest, out_dir=out, workers=0, plots=False)
    assert calls["images"] == len(scored) - 10 and result.scored == ["test"]
    pd.testing.assert_frame_equal(load_predictions(out / "test" / "predictions.parquet"), scored)

    (out / "test" / "eval_state.json").write_text(json.dumps(stamp))  # as the previous release wrote it
    calls["images"] = 0
    again = evaluate(run_dir / "best", manifest=manifest, out_dir=out, workers=0, plots=False)
    assert again.resumed == ["test"] and calls["images"] == 0
    assert again.value("test") == pytest.approx(reference.value("test"))
