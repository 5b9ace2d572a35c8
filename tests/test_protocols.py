"""Every bundled protocol loads, and selects the right rows of a small manifest shaped like its dataset."""

from __future__ import annotations

import pandas as pd
import pytest

from mfclip.data.manifest import ManifestError
from mfclip.engine.protocol import list_protocols, load_protocol
from mfclip.utils.config import ConfigError

DIFF_SUBSETS = {
    "t2i": ["Midjourney", "SDXL", "FreeDoM_T", "HPS"],
    "i2i": ["SDXL_Refine", "LoRA", "DreamBooth", "FreeDoM_I"],
    "fs": ["DiffFace", "DCFace"],
    "fe": ["Imagic", "cycle_diff", "CoDiff"],
}
DIFF_TYPES = {
    "t2i": "entire_synthesis",
    "i2i": "entire_synthesis",
    "fs": "face_swap",
    "fe": "attribute_manipulation",
}
GENFACE = {
    "DDPM": ("entire_synthesis", "diffusion"),
    "LatDiff": ("entire_synthesis", "diffusion"),
    "CollDiff": ("entire_synthesis", "diffusion"),
    "StyleGAN3": ("entire_synthesis", "gan"),
    "DiffAE": ("attribute_manipulation", "diffusion"),
    "LatTrans": ("attribute_manipulation", "gan"),
    "IA-FaceS": ("attribute_manipulation", "gan"),
    "FSLSD": ("face_swap", "gan"),
    "FaceSwapper": ("face_swap", "gan"),
    "DiffFace": ("face_swap", "diffusion"),
}
FFPP = {"Deepfakes": "face_swap", "FaceSwap": "face_swap", "Face2Face": "attribute_manipulation"}
SPLITS = ("train", "val", "test")
PER_CELL = 2  # images per (split, generator) and reals per split


def _row(path: str, label: int, split: str, dataset: str, **labels: str) -> dict[str, object]:
    return {
        "path": path,
        "label": label,
        "split": split,
        "dataset": dataset,
        "forgery_type": labels.get("forgery_type", ""),
        "family": labels.get("family", ""),
        "generator": labels.get("generator", ""),
        "video_id": labels.get("video_id", ""),
    }


def diff_manifest() -> pd.DataFrame:
    rows = []
    for split in SPLITS:
        rows += [_row(f"{split}/real/{i}.png", 0, split, "diff") for i in range(PER_CELL)]
        for subset, generators in DIFF_SUBSETS.items():
            for generator in generators:
                rows += [
                    _row(
                        f"{split}/{subset}/{generator}/id_{i}.png",
                        1,
                        split,
                        "diff",
                        forgery_type=DIFF_TYPES[subset],
                        family="diffusion",
                        generator=generator,
                    )
                    for i in range(PER_CELL)
                ]
    return pd.DataFrame(rows)


def genface_manifest() -> pd.DataFrame:
    rows = []
    for split in SPLITS:
        rows += [_row(f"real/{split}{i}.png", 0, split, "genface") for i in range(PER_CELL)]
        for generator, (forgery_type, family) in GENFACE.items():
            rows += [
                _row(
                    f"{generator}/{split}{i}.png",
                    1,
                    split,
                    "genface",
                    forgery_type=forgery_type,
                    family=family,
                    generator=generator,
                )
                for i in range(PER_CELL)
            ]
    return pd.DataFrame(rows)


def ffpp_manifest() -> pd.DataFrame:
    rows = []
    for split in SPLITS:
        rows += [
            _row(f"original/{split}{i}.png", 0, split, "ffpp", video_id=f"original/{i}")
            for i in range(PER_CELL)
        ]
        for method, forgery_type in FFPP.items():
            rows += [
                _row(
                    f"{method}/{split}{i}.png",
                    1,
                    split,
                    "ffpp",
                    forgery_type=forgery_type,
                    generator=method,
                    video_id=f"{method}/{i}",
                )
                for i in range(PER_CELL)
            ]
    return pd.DataFrame(rows)


def _fakes(frame: pd.DataFrame) -> set[str]:
    return set(frame.loc[frame["label"] == 1, "generator"])


def _splits(frame: pd.DataFrame) -> set[str]:
    return set(frame["split"])


BUNDLED = [
    "cross-dataset",
    "diff-cross-forgery",
    "diff-leave-generator-out",
    "genface-cross-generator",
    "robustness",
]


def test_the_bundled_protocols_are_listed() -> None:
    assert set(BUNDLED) <= set(list_protocols())


@pytest.mark.parametrize("name", list_protocols())
def test_every_bundled_protocol_and_variant_loads_with_disjoint_val_and_test(name: str) -> None:
    protocol = load_protocol(name)
    assert protocol.test, f"{name} has no test sets"
    for variant in protocol.variant_names():
        resolved = protocol.variant(variant)
        assert resolved.train is not None and resolved.val is not None
        assert resolved.val.split and "test" not in resolved.val.split
        assert resolved.train.split and "test" not in resolved.train.split
        for selector in resolved.test.values():
            assert selector.split == ["test"]


def test_diff_cross_forgery_trains_on_one_subset_and_tests_on_all_four() -> None:
    manifest = diff_manifest()
    protocol = load_protocol("diff-cross-forgery")
    assert sorted(protocol.variants) == ["fe", "fs", "i2i", "t2i"]
    for variant, generators in DIFF_SUBSETS.items():
        resolved = protocol.variant(variant)
        train = resolved.train.select(manifest)
        assert _fakes(train) == set(generators) and _splits(train) == {"train"}
        assert (train["label"] == 0).sum() == PER_CELL  # the reals of the train split
        val = resolved.val.select(manifest)
        assert _fakes(val) == set(generators) and _splits(val) == {"val"}
        assert list(resolved.test) == ["t2i", "i2i", "fs", "fe"]
        for subset, selector in resolved.test.items():
            test = selector.select(manifest)
            assert _fakes(test) == set(DIFF_SUBSETS[subset]) and _splits(test) == {"test"}
            assert (test["label"] == 0).sum() == PER_CELL


def test_diff_leave_generator_out_holds_out_exactly_one_generator_per_variant() -> None:
    manifest = diff_manifest()
    protocol = load_protocol("diff-leave-generator-out")
    expected = {f"{s}-{g}" for s, gens in DIFF_SUBSETS.items() for g in gens}
    assert set(protocol.variants) == expected
    for subset, generators in DIFF_SUBSETS.items():
        for held_out in generators:
            resolved = protocol.variant(f"{subset}-{held_out}")
            seen = set(generators) - {held_out}
            assert _fakes(resolved.train.select(manifest)) == seen
            assert _fakes(resolved.val.select(manifest)) == seen
            assert _fakes(resolved.test["seen"].select(manifest)) == seen
            unseen = resolved.test["unseen"].select(manifest)
            assert _fakes(unseen) == {held_out} and _splits(unseen) == {"test"}
    base = protocol.variant(None)
    assert _fakes(base.test["unseen"].select(manifest)) == {"HPS"}


def test_genface_cross_generator_separates_the_families() -> None:
    manifest = genface_manifest()
    protocol = load_protocol("genface-cross-generator")
    diffusion = {g for g, (_, family) in GENFACE.items() if family == "diffusion"}
    gan = set(GENFACE) - diffusion
    for variant, (seen, unseen) in {
        "diffusion-to-gan": (diffusion, gan),
        "gan-to-diffusion": (gan, diffusion),
    }.items():
        resolved = protocol.variant(variant)
        assert _fakes(resolved.train.select(manifest)) == seen
        assert _fakes(resolved.val.select(manifest)) == seen
        assert _fakes(resolved.test["seen"].select(manifest)) == seen
        assert _fakes(resolved.test["unseen"].select(manifest)) == unseen


def test_cross_dataset_reads_three_manifests(tmp_path) -> None:
    manifests = {"diff": diff_manifest(), "genface": genface_manifest(), "ffpp": ffpp_manifest()}
    protocol = load_protocol("cross-dataset")
    assert set(protocol.manifests) == set(manifests)
    assert protocol.manifest_path("genface", tmp_path) == tmp_path / "genface" / "manifest.csv"
    for variant, source in {"train-diff": "diff", "train-genface": "genface", "train-ffpp": "ffpp"}.items():
        resolved = protocol.variant(variant)
        assert resolved.train.manifest == source and resolved.val.manifest == source
        train = resolved.train.select(manifests[source])
        assert len(train) == (manifests[source]["split"] == "train").sum()
        for name, selector in resolved.test.items():
            assert selector.manifest == name
            test = selector.select(manifests[name])
            assert set(test["dataset"]) == {name} and _splits(test) == {"test"}
            assert len(test) == (manifests[name]["split"] == "test").sum()


def test_robustness_lists_the_graded_degradations() -> None:
    protocol = load_protocol("robustness")
    levels = {(p.kind, p.quality or p.factor or p.sigma) for p in protocol.robustness}
    assert levels == {
        ("jpeg", 95),
        ("jpeg", 75),
        ("jpeg", 50),
        ("jpeg", 30),
        ("downscale", 0.5),
        ("downscale", 0.25),
        ("blur", 1),
        ("blur", 2),
        ("blur", 3),
        ("noise", 5),
        ("noise", 10),
        ("noise", 20),
    }
    test = protocol.test["test"].select(diff_manifest())
    assert _splits(test) == {"test"} and len(test) == PER_CELL * 14


def test_unknown_variant_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"no variant 'x2i'.*fe.*fs.*i2i.*t2i"):
        load_protocol("diff-cross-forgery").variant("x2i")


def test_every_name_a_selector_uses_must_occur_in_the_rows_it_filters() -> None:
    """A misspelt or absent name is an error naming the protocol key and the names that do occur
    (it used to select nothing, silently)."""
    from mfclip.engine.protocol import RowSelector

    manifest = ffpp_manifest()
    manifest.attrs["source"] = "ffpp.csv"

    def refused(selector: dict, key: str = "test.x") -> str:
        with pytest.raises(ManifestError) as caught:
            RowSelector.from_dict(selector).select(manifest, key=key, where="protocol 'p'")
        return str(caught.value)

    message = refused({"split": "test", "generators": ["Deepfakes", "FaceSwpa"]})
    assert message == (
        "protocol 'p': test.x.generators: 'FaceSwpa' does not occur among the fake rows of split test of "
        "ffpp.csv (present: Deepfakes, Face2Face, FaceSwap); did you mean 'FaceSwap'?"
    )
    assert "test.x.exclude_generators: 'Face2Fcae'" in refused({"exclude_generators": ["Face2Fcae"]})
    assert "test.x.forgery_types: 'face_swop'" in refused({"forgery_types": ["face_swop"]})
    assert "test.x.families: 'gan' does not occur among the fake rows of any split" in refused(
        {"families": ["gan"]}
    )
    assert "train.datasets: 'ff++'" in refused({"split": "train", "datasets": ["ff++"]}, key="train")
    assert "test.x.real_datasets: 'celeba' does not occur among the real rows" in refused(
        {"real_datasets": ["celeba"]}
    )
    only_train = manifest[manifest["split"] == "train"].copy()
    only_train.attrs["source"] = "train.csv"
    with pytest.raises(
        ManifestError,
        match=r"^val\.split: 'val' does not occur among the rows of train\.csv \(present: train\)$",
    ):
        RowSelector(split=["val"]).select(only_train, key="val")
    # Names that occur, but not together: the selection is empty.
    with pytest.raises(
        ManifestError,
        match=r"^test\.x \(split=\['test'\], generators=\['Deepfakes'\], exclude_generators=\['Deepfakes'\], "
        r"include_real=False\) selects no rows of ffpp\.csv",
    ):
        RowSelector.from_dict(
            {
                "split": "test",
                "generators": ["Deepfakes"],
                "exclude_generators": ["Deepfakes"],
                "include_real": False,
            }
        ).select(manifest, key="test.x")


def test_protocol_select_names_the_protocol_and_part() -> None:
    protocol = load_protocol("diff-leave-generator-out").variant("fs-DCFace")
    manifest = diff_manifest()
    assert _fakes(protocol.select("test.unseen", manifest)) == {"DCFace"}
    without = manifest[manifest["generator"] != "DiffFace"]
    with pytest.raises(
        ManifestError, match=r"^protocol 'diff-leave-generator-out-fs-DCFace': train\.generators: 'DiffFace'"
    ):
        protocol.select("train", without)
    with pytest.raises(ConfigError, match=r"has no 'test\.nope' selector"):
        protocol.select("test.nope", manifest)
