"""Face detectors, box crops and 5-point alignment on real photos (skimage astronaut, Grace Hopper)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfclip.face import (
    ARCFACE_TEMPLATE_112,
    FaceBox,
    FaceDetector,
    FaceDetectorError,
    align_face,
    alignment_matrix,
    crop_face,
    get_detector,
    list_detectors,
    similarity_transform,
    template_landmarks,
)

# Boxes found by MTCNN at full resolution.
ASTRONAUT_BOX = (181, 62, 268, 172)
GRACE_HOPPER_BOX = (174, 120, 356, 340)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """MTCNN's small convolutions gain nothing from intra-op threads, and lose much on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mtcnn() -> FaceDetector:
    return get_detector("mtcnn")


@pytest.fixture(scope="module")
def haar() -> FaceDetector:
    return get_detector("haar")


@pytest.fixture(scope="module")
def grace_hopper_rgb(grace_hopper_path: Path) -> np.ndarray:
    return np.asarray(Image.open(grace_hopper_path).convert("RGB"))


def iou(face: FaceBox, box: tuple[float, float, float, float]) -> float:
    x0, y0 = max(face.x0, box[0]), max(face.y0, box[1])
    x1, y1 = min(face.x1, box[2]), min(face.y1, box[3])
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    return inter / (face.area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def test_list_detectors() -> None:
    assert list_detectors() == ["mtcnn", "haar", "none"]


def test_mtcnn_finds_the_astronaut(mtcnn: FaceDetector, astronaut_rgb: np.ndarray) -> None:
    faces = mtcnn.detect(astronaut_rgb)
    assert len(faces) == 1
    face = faces[0]
    np.testing.assert_allclose([face.x0, face.y0, face.x1, face.y1], ASTRONAUT_BOX, atol=3)
    assert face.score > 0.99
    assert face.landmarks is not None and face.landmarks.shape == (5, 2)
    assert face.landmarks.dtype == np.float32
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert left_eye[1] < nose[1] < mouth_left[1]
    assert mouth_left[0] < mouth_right[0]
    assert np.all((face.landmarks >= [face.x0, face.y0]) & (face.landmarks <= [face.x1, face.y1]))


@pytest.mark.parametrize("name", ["mtcnn", "haar"])
@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_detectors_find_the_face(
    name: str, photo: str, request: pytest.FixtureRequest, astronaut_rgb: np.ndarray
) -> None:
    detector = request.getfixturevalue(name)
    image = astronaut_rgb if photo == "astronaut" else request.getfixturevalue("grace_hopper_rgb")
    expected = ASTRONAUT_BOX if photo == "astronaut" else GRACE_HOPPER_BOX
    faces = detector.detect(image)
    assert faces, f"{name} found no face in {photo}"
    assert faces[0].area == max(face.area for face in faces)
    assert iou(faces[0], expected) > 0.5
    assert (faces[0].landmarks is not None) == (name == "mtcnn")


@pytest.mark.parametrize("name", ["mtcnn", "haar"])
def test_no_face_in_a_flat_image(name: str, request: pytest.FixtureRequest) -> None:
    detector = request.getfixturevalue(name)
    assert detector.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    # Smaller than the smallest detectable face: no detection, no crash.
    assert detector.detect(np.full((10, 10, 3), 128, np.uint8)) == []


def test_mtcnn_batch_matches_single(mtcnn: FaceDetector, astronaut_rgb: np.ndarray) -> None:
    small = astronaut_rgb[::2, ::2].copy()
    frames = [small, np.roll(small, 10, axis=1), np.zeros_like(small)]
    batched = get_detector("mtcnn", batch_size=2).detect_batch(frames)  # a batch of 2, then 1
    single = [mtcnn.detect(frame) for frame in frames]
    assert [len(faces) for faces in batched] == [1, 1, 0]
    for got, want in zip(batched, single, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(
                [a.x0, a.y0, a.x1, a.y1, a.score], [b.x0, b.y0, b.x1, b.y1, b.score], atol=1e-3
            )
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
    # The shifted frame's box moved with the face.
    assert batched[1][0].x0 == pytest.approx(batched[0][0].x0 + 10, abs=2)


def test_centre_crop_detector() -> None:
    detector = get_detector("none")
    (box,) = detector.detect(np.zeros((60, 100, 3), np.uint8))
    assert (box.x0, box.y0, box.x1, box.y1, box.score) == (20, 0, 80, 60, 1.0)
    assert box.landmarks is None


def test_detector_errors() -> None:
    with pytest.raises(FaceDetectorError, match=r"unknown face detector 'retina'.*mtcnn"):
        get_detector("retina")
    with pytest.raises(FaceDetectorError, match="haar"):
        get_detector("haar", min_nieghbors=3)
    with pytest.raises(FaceDetectorError, match="cascade"):
        get_detector("haar", cascade="/nonexistent/cascade.xml")
    detector = get_detector("none")
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        detector.detect(np.zeros((8, 8), np.uint8))


def test_crop_face_inside_and_at_the_border() -> None:
    image = np.arange(50 * 60 * 3, dtype=np.uint32).reshape(50, 60, 3).astype(np.uint8)
    box = FaceBox(10, 10, 30, 30, 1.0)
    np.testing.assert_array_equal(crop_face(image, box, margin=0, size=20), image[10:30, 10:30])
    np.testing.assert_array_equal(crop_face(image, box, margin=1.0, size=40), image[0:40, 0:40])
    # A box at the corner: the enlarged square leaves the image, the missing part is black, the face centred.
    corner = crop_face(image, FaceBox(0, 0, 20, 20, 1.0), margin=1.0, size=40)
    assert corner.shape == (40, 40, 3)
    assert not corner[:10].any() and not corner[:, :10].any()
    np.testing.assert_array_equal(corner[10:, 10:], image[0:30, 0:30])
    # A non-square box becomes a square on its longer side, then resized.
    assert crop_face(image, FaceBox(5, 5, 25, 45, 1.0), margin=0.3, size=32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="margin"):
        crop_face(image, box, margin=-0.1)


def test_template_landmarks() -> None:
    np.testing.assert_allclose(template_landmarks(112, 1.0), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(template_landmarks(224, 1.0), ARCFACE_TEMPLATE_112 * 2)
    shrunk = template_landmarks(256, 1.3)
    centre = np.array([128.0, 128.0])
    np.testing.assert_allclose(shrunk - centre, (ARCFACE_TEMPLATE_112 * 256 / 112 - centre) / 1.3)


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 200, size=(5, 2))
    angle, factor, shift = 0.4, 1.7, np.array([12.0, -30.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = factor * points @ rotation.T + shift
    matrix = similarity_transform(points, target)
    np.testing.assert_allclose(matrix[:, :2], factor * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_similarity_transform_matches_skimage_and_never_reflects() -> None:
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(1)
    source = rng.uniform(0, 100, size=(5, 2))
    target = rng.uniform(0, 100, size=(5, 2))
    matrix = similarity_transform(source, target)
    if hasattr(SimilarityTransform, "from_estimate"):
        reference = SimilarityTransform.from_estimate(source, target)
    else:  # scikit-image < 0.26
        reference = SimilarityTransform()
        assert reference.estimate(source, target)
    np.testing.assert_allclose(matrix, reference.params[:2], atol=1e-8)
    mirrored = source * [-1, 1]
    assert np.linalg.det(similarity_transform(mirrored, source)[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), target)


def test_align_face_moves_landmarks_onto_the_template() -> None:
    # Five bright dots placed by a known similarity transform of the template; alignment must undo it.
    angle, factor, shift = -0.3, 1.4, np.array([40.0, 25.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = factor * ARCFACE_TEMPLATE_112 @ rotation.T + shift
    image = np.zeros((240, 240, 3), np.uint8)
    for x, y in np.round(landmarks).astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = align_face(image, landmarks, size=112, scale=1.0)
    assert aligned.shape == (112, 112, 3)
    for x, y in np.round(ARCFACE_TEMPLATE_112).astype(int):
        assert aligned[y, x].min() > 200
    np.testing.assert_allclose(
        alignment_matrix(landmarks, 112, 1.0) @ np.c_[landmarks, np.ones(5)].T,
        ARCFACE_TEMPLATE_112.T,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="5 landmarks"):
        align_face(image, landmarks[:4])


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_aligned_real_faces_have_eyes_on_the_template(
    mtcnn: FaceDetector, photo: str, request: pytest.FixtureRequest, astronaut_rgb: np.ndarray
) -> None:
    image = astronaut_rgb if photo == "astronaut" else request.getfixturevalue("grace_hopper_rgb")
    face = mtcnn.detect(image)[0]
    aligned = align_face(image, face.landmarks, size=256, scale=1.3)
    assert aligned.shape == (256, 256, 3)
    again = mtcnn.detect(aligned)
    assert again, "no face found in the aligned crop"
    eyes = again[0].landmarks[:2]
    np.testing.assert_allclose(eyes, template_landmarks(256, 1.3)[:2], atol=0.04 * 256)
    # Roughly level eyes after alignment.
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.03 * 256
