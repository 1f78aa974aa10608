"""Face detection and alignment against facexlib on the same (random) weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import EXAMPLES, OLD_PHOTO_LANDMARKS, retinaface_state_dict
from i2icli.errors import WeightsError
from i2icli.faces.align import alignment_matrix, crop_face, paste_matrix
from i2icli.faces.detect import FaceDetector, build_retinaface, retinaface_network_name, select_faces
from i2icli.imageio import read_image

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def retinaface():
    state = {k.removeprefix("module."): v for k, v in retinaface_state_dict("mobile0.25", seed=3).items()}
    return build_retinaface(state)


def test_network_is_read_from_the_keys():
    assert retinaface_network_name({"body.conv1.weight": torch.zeros(1)}) == "resnet50"
    assert retinaface_network_name({"body.stage1.0.0.weight": torch.zeros(1)}) == "mobile0.25"
    with pytest.raises(WeightsError):
        retinaface_network_name({"conv_first.weight": torch.zeros(1)})


def test_detections_match_facexlib(retinaface):
    """Full-resolution detection: same boxes, scores and landmarks as RetinaFace.detect_faces."""
    photo = read_image(EXAMPLES / "old_photo.jpg").rgb
    threshold = 0.5  # random weights score around 0.5: a threshold there keeps a useful number of boxes
    with torch.no_grad():
        reference = retinaface.detect_faces(photo[:, :, ::-1].copy(), conf_threshold=threshold, nms_threshold=0.4)
    ours = FaceDetector(retinaface, CPU, max_side=0).detect(photo, threshold=threshold, nms_threshold=0.4)
    assert len(reference) >= 3
    # facexlib's NMS counts box areas with +1 pixel, torchvision's without: compare the boxes both keep.
    matched = 0
    for face in ours:
        rows = np.where(np.all(np.abs(reference[:, :4] - face.box) < 1e-3, axis=1))[0]
        if len(rows):
            row = reference[rows[0]]
            assert abs(row[4] - face.score) < 1e-5
            np.testing.assert_allclose(row[5:15].reshape(5, 2), face.landmarks, atol=1e-3)
            matched += 1
    assert matched >= 0.9 * max(len(ours), len(reference))


def test_detection_on_a_downscaled_copy_maps_back(retinaface):
    small = read_image(EXAMPLES / "old_photo.jpg").rgb[:320, :320]
    large = cv2.resize(small, (640, 640), interpolation=cv2.INTER_NEAREST)  # INTER_AREA halves it back exactly
    threshold = 0.5
    on_small = FaceDetector(retinaface, CPU, max_side=0).detect(small, threshold=threshold)
    on_large = FaceDetector(retinaface, CPU, max_side=320).detect(large, threshold=threshold)
    assert len(on_small) == len(on_large) > 0
    for a, b in zip(on_small, on_large):
        np.testing.assert_allclose(b.box, 2 * a.box, atol=1e-3)
        np.testing.assert_allclose(b.landmarks, 2 * a.landmarks, atol=1e-3)


def test_select_faces(retinaface):
    photo = read_image(EXAMPLES / "old_photo.jpg").rgb
    faces = FaceDetector(retinaface, CPU, max_side=0).detect(photo, threshold=0.5)
    big = select_faces(faces, photo.shape, min_size=40)
    assert all(face.size >= 40 for face in big) and len(big) < len(faces)
    (centre,) = select_faces(faces, photo.shape, only_center=True)
    distance = lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - np.array([photo.shape[1] / 2, photo.shape[0] / 2]))
    assert distance(centre) == min(distance(f) for f in faces)


def test_alignment_puts_landmarks_on_the_template():
    from i2icli.faces.align import FACE_TEMPLATE_512

    matrix = alignment_matrix(OLD_PHOTO_LANDMARKS)
    moved = np.hstack([OLD_PHOTO_LANDMARKS, np.ones((5, 1), np.float32)]) @ matrix.T
    assert np.abs(moved - FACE_TEMPLATE_512).max() < 12  # five points, four degrees of freedom
    back = np.hstack([moved, np.ones((5, 1))]) @ paste_matrix(matrix, 1.0).T
    np.testing.assert_allclose(back, OLD_PHOTO_LANDMARKS, atol=1e-3)


def test_crop_keeps_16_bit_and_grey_border():
    photo = read_image(EXAMPLES / "old_photo.jpg").rgb
    matrix = alignment_matrix(OLD_PHOTO_LANDMARKS - np.float32([130, 60]))  # face at the corner: the crop runs off the photo
    crop8 = crop_face(photo, matrix)
    crop16 = crop_face(photo.astype(np.uint16) * 257, matrix)
    assert crop16.dtype == np.uint16 and tuple(crop8[0, 0]) == (132, 133, 135)
    assert np.abs(crop16.astype(np.int64) - crop8.astype(np.int64) * 257).max() <= 257


@pytest.mark.parametrize("height", [1, 2])
def test_a_strip_is_detected_on_and_mapped_back_side_by_side(retinaface, monkeypatch, height):
    """A 4000 px strip one or two pixels high: its detection copy rounded to no rows (cv2 refused
    it, and the photo failed with an OpenCV assertion), or to one row that the single scale mapped
    back to 3.1 px instead of 2. Every box spans the whole copy and every landmark sits in its far
    corner here, so they must come back as the whole photo and its far corner."""
    from facexlib.detection import retinaface_utils

    whole_copy = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    monkeypatch.setattr(retinaface_utils, "decode", lambda loc, priors, variance: whole_copy.repeat(len(priors), 1))
    monkeypatch.setattr(retinaface_utils, "decode_landm", lambda landms, priors, variance: torch.ones(len(priors), 10))
    strip = np.full((height, 4000, 3), 90, np.uint8)
    faces = FaceDetector(retinaface, CPU, max_side=1280).detect(strip, threshold=0.0)
    assert faces
    for face in faces:
        np.testing.assert_allclose(face.box, [0, 0, 4000, height], rtol=1e-6)
        np.testing.assert_allclose(face.landmarks, [[4000, height]] * 5, rtol=1e-6)
