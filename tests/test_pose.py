"""Pose files read into canvas keypoints, and the official 20-channel DeepFashionHD label, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from i2icli.errors import InputError
from i2icli.semantics.inputs import is_pose_file
from i2icli.semantics.pose import (
    CANVAS,
    KEYPOINTS,
    Pose,
    official_pair_files,
    pose_drawing,
    read_pose,
    render_pose_label,
    square_frame,
)


def make_pose(points: dict[int, tuple[float, float]]) -> Pose:
    """A Pose with only the given COCO-18 keypoints present."""
    xy = np.zeros((KEYPOINTS, 2))
    present = np.zeros(KEYPOINTS, dtype=bool)
    for index, point in points.items():
        xy[index] = point
        present[index] = True
    return Pose(xy, present)


def write_pair(folder: Path, candidate: list[list[float]], subset: list[list[float]], name: str = "p") -> Path:
    """The official NAME_candidate.txt / NAME_subset.txt pair; returns the NAME_{}.txt pattern."""
    np.savetxt(folder / f"{name}_candidate.txt", np.array(candidate, dtype=float).reshape(-1, 4))
    np.savetxt(folder / f"{name}_subset.txt", np.array(subset, dtype=float).reshape(-1, 20))
    return folder / f"{name}_{{}}.txt"


def subset_row(indices: dict[int, int], score: float = 10.0) -> list[float]:
    """One subset row: candidate row per keypoint, -1 elsewhere, then score and count."""
    row = [float(indices.get(k, -1)) for k in range(KEYPOINTS)]
    return row + [score, float(len(indices))]


def write_json(path: Path, people: list[list[float]]) -> Path:
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": p} for p in people]}))
    return path


def coco_flat(points: dict[int, tuple[float, float]], count: int = KEYPOINTS) -> list[float]:
    """pose_keypoints_2d for ``count`` keypoints; the given ones with confidence 0.9, the rest 0 0 0."""
    flat = [0.0] * (3 * count)
    for index, (x, y) in points.items():
        flat[3 * index : 3 * index + 3] = [x, y, 0.9]
    return flat


# --- rendering ------------------------------------------------------------------------------------


def test_keypoint_circle_colour_is_the_official_bgr_convention_read_as_rgb():
    # Keypoint 2 (right shoulder) is drawn with (255, 170, 0) into a canvas then read as BGR.
    drawing = pose_drawing(make_pose({2: (300, 400)}), size=CANVAS)
    assert drawing.dtype == np.uint8 and drawing.shape == (CANVAS, CANVAS, 3)
    assert drawing[400, 300].tolist() == [0, 170, 255]
    assert drawing[400, 325].tolist() == [0, 0, 0]  # radius is 20
    assert drawing[425, 300].tolist() == [0, 0, 0]
    # At 512 the nearest-neighbour resize samples canvas pixel 2j+1: (150, 200) reads (301, 401).
    small = render_pose_label(make_pose({2: (300, 400)}), size=512)
    assert (small[:3, 200, 150] * 255).round().tolist() == [0, 170, 255]
    assert small[:3, 200, 163].tolist() == [0.0, 0.0, 0.0]  # canvas x = 327


def test_single_limb_colour_and_distance():
    # Neck (1) and right shoulder (2) form limb 0 (official pair [2, 3]): a horizontal ellipse centred
    # at (500, 500), half-axes 100 x 20, so its top edge above x=500 is the row y=520.
    pose = make_pose({1: (400, 500), 2: (600, 500)})
    full = render_pose_label(pose, size=CANVAS)
    # Limb colour (255, 0, 0) blended at 0.6 over black, read as BGR -> RGB (0, 0, 153).
    assert (full[:3, 500, 500] * 255).round().tolist() == [0, 0, 153]
    limb = full[3] * 255
    assert limb[500, 500] == 0 and limb[520, 500] == 0
    assert limb[530, 500] == 3  # 10 px below the edge: L1 10 / 3 = 3.33, truncated to uint8
    assert limb[620, 500] == 33  # 100 px: 33.33 -> 33
    assert limb[500, 700] == 33  # 100 px right of the tip at x=600
    # At 512 the 2x bilinear (antialiased) box averages canvas rows 619..622 around y = 620.5.
    small = render_pose_label(pose, size=512)[3] * 255
    assert small[250, 250] == 0
    assert abs(small[310, 250] - 100.5 / 3) <= 1


def test_missing_limbs_are_constant_one():
    # With no drawn limb, cv2.distanceTransform has no zero pixel and returns FLT_MAX everywhere;
    # / 3 and clipped that is 255, i.e. 1.0 in the label.
    label = render_pose_label(make_pose({1: (400, 500), 2: (600, 500)}), size=64)
    assert np.all(label[4:] == 1.0)
    assert label[3].min() == 0.0  # the one drawn limb (saturates at 1.0 only 765 px away)


def test_label_shape_type_and_range():
    rng = np.random.default_rng(7)
    label = render_pose_label(Pose(rng.uniform(50, 970, (KEYPOINTS, 2)), np.ones(KEYPOINTS, bool)), size=128)
    assert label.shape == (20, 128, 128) and label.dtype == np.float32
    assert label.min() == 0.0 and label.max() <= 1.0
    # All 17 limbs are drawn: every distance channel touches its limb somewhere.
    assert np.all(label[3:].reshape(17, -1).min(axis=1) == 0.0)


def test_pose_drawing_is_the_label_rgb():
    pose = make_pose({0: (500, 300), 1: (500, 420), 2: (400, 430), 5: (600, 430)})
    label = render_pose_label(pose, size=256)
    drawing = pose_drawing(pose, size=256)
    assert np.array_equal(drawing, np.round(label[:3] * 255).astype(np.uint8).transpose(1, 2, 0))
    assert drawing.max() > 0


# --- reading --------------------------------------------------------------------------------------


def test_square_frame_matches_the_official_padding():
    assert square_frame(750, 1101) == (1101, 175, 0)  # 175 left, 176 right
    assert square_frame(1101, 750) == (1101, 0, 175)
    assert square_frame(512, 512) == (512, 0, 0)


def test_official_pair_under_each_name(tmp_path):
    pattern = write_pair(tmp_path, [[300.5, 400.25, 0.9, 0], [310, 500, 0.8, 1]], [subset_row({0: 1, 3: 0})])
    poses = [read_pose(tmp_path / name) for name in (pattern.name, "p_candidate.txt", "p_subset.txt")]
    for pose in poses:
        assert pose.present.tolist() == [k in (0, 3) for k in range(KEYPOINTS)]
        assert pose.points[0].tolist() == [310, 500] and pose.points[3].tolist() == [300.5, 400.25]
    # The pair is already in canvas pixels: a frame changes nothing.
    assert np.array_equal(read_pose(pattern, frame=(750, 1101)).points, poses[0].points)


@pytest.mark.parametrize(("candidate_name", "subset_name"), [
    ("P_CANDIDATE.TXT", "P_SUBSET.TXT"), ("P_Candidate.txt", "P_Subset.txt"), ("p_candidate.txt", "p_Subset.txt"),
])  # fmt: skip
def test_official_pair_is_recognised_in_any_case(tmp_path, candidate_name, subset_name):
    """Copies made on Windows may upper-case the names; the partner is found in the case it has on disk."""
    write_pair(tmp_path, [[300.5, 400.25, 0.9, 0], [310, 500, 0.8, 1]], [subset_row({0: 1, 3: 0})], name="x")
    (tmp_path / "x_candidate.txt").rename(tmp_path / candidate_name)
    (tmp_path / "x_subset.txt").rename(tmp_path / subset_name)
    for given in (candidate_name, subset_name):
        assert official_pair_files(tmp_path / given) == (tmp_path / candidate_name, tmp_path / subset_name)
        pose = read_pose(tmp_path / given)
        assert pose.points[0].tolist() == [310, 500] and pose.points[3].tolist() == [300.5, 400.25]
    assert is_pose_file(tmp_path / candidate_name) and is_pose_file(tmp_path / subset_name)


def test_several_people_in_the_subset_take_the_highest_score(tmp_path):
    candidate = [[100, 100, 0.9, 0], [900, 900, 0.9, 1], [500, 500, 0.9, 2]]
    people = [subset_row({0: 0}, 5.0), subset_row({0: 1}, 12.5), subset_row({0: 2}, 7.0)]
    pattern = write_pair(tmp_path, candidate, people)
    pose = read_pose(pattern)
    assert pose.present.sum() == 1 and pose.points[0].tolist() == [900, 900]


def test_json_coco18_and_body25_give_the_same_label_as_the_pair(tmp_path):
    points = {0: (512, 200), 1: (512, 330), 2: (420, 340), 3: (400, 470), 8: (460, 600), 11: (560, 600)}
    points[17] = (540, 180)
    coco = write_json(tmp_path / "coco.json", [coco_flat(points)])
    # BODY_25: same body with MidHip inserted at 8 and six foot points appended, all plausible values.
    body25 = coco_flat({k + (k >= 8): v for k, v in points.items()}, count=25)
    body25[3 * 8 : 3 * 8 + 3] = [510, 600, 0.7]
    body25[3 * 19 :] = [450.0, 990.0, 0.5] * 6
    body25_path = write_json(tmp_path / "body25.json", [body25])
    ordered = sorted(points)
    candidate = [[*points[k], 0.9, i] for i, k in enumerate(ordered)]
    pattern = write_pair(tmp_path, candidate, [subset_row({k: i for i, k in enumerate(ordered)})])

    frame = (CANVAS, CANVAS)  # a 1024x1024 photo maps onto the canvas unchanged
    from_coco, from_body25 = read_pose(coco, frame), read_pose(body25_path, frame)
    assert np.array_equal(from_coco.present, from_body25.present) and from_coco.present.sum() == len(points)
    label = render_pose_label(from_coco, size=256)
    assert np.array_equal(label, render_pose_label(from_body25, size=256))
    assert np.array_equal(label, render_pose_label(read_pose(pattern), size=256))


def test_json_picks_the_most_confident_person(tmp_path):
    faint = coco_flat({0: (10, 10), 1: (10, 50), 2: (0, 60)})
    strong = coco_flat({0: (700, 100)})
    strong[2] = 2.9  # one keypoint, but a larger confidence sum (2.9 > 3 * 0.9)
    pose = read_pose(write_json(tmp_path / "two.json", [faint, strong]), frame=(1024, 1024))
    assert pose.present.sum() == 1 and pose.points[0].tolist() == [700, 100]


def test_json_frame_maps_like_the_padded_photo(tmp_path):
    pose = read_pose(write_json(tmp_path / "tall.json", [coco_flat({0: (100, 200), 4: (0, 1101)})]), frame=(750, 1101))
    assert pose.points[0] == pytest.approx([(100 + 175) * 1024 / 1101, 200 * 1024 / 1101])
    assert pose.points[4] == pytest.approx([175 * 1024 / 1101, 1024])
    assert not pose.present[1] and pose.points[1].tolist() == [0, 0]


def test_json_needs_a_frame(tmp_path):
    with pytest.raises(ValueError, match="frame"):
        read_pose(write_json(tmp_path / "a.json", [coco_flat({0: (1, 1)})]))


def test_pose_checks_its_shapes_and_is_read_only():
    with pytest.raises(ValueError):
        Pose(np.zeros((17, 2)), np.zeros(17, bool))
    pose = make_pose({0: (1, 2)})
    with pytest.raises(ValueError):
        pose.points[0, 0] = 5


GOOD_CANDIDATE = "100 100 0.9 0\n200 200 0.9 1\n"
ROW = " ".join(["0", "1"] + ["-1"] * 16 + ["9", "2"])

PAIR_CASES = {
    # case: (candidate text, subset text; None = file absent), the file the message names, words in it
    "missing subset": (GOOD_CANDIDATE, None, "p_subset.txt", "not found"),
    "missing candidate": (None, ROW + "\n", "p_candidate.txt", "not found"),
    "unparsable candidate": ("100 abc 0.9 0\n", ROW + "\n", "p_candidate.txt", "cannot read"),
    "ragged candidate": ("1 2 3 4\n1 2\n", ROW + "\n", "p_candidate.txt", "cannot read"),
    "candidate with 3 columns": ("100 100 0.9\n", ROW + "\n", "p_candidate.txt", "expected 4"),
    "subset with 19 columns": (GOOD_CANDIDATE, " ".join(ROW.split()[:19]) + "\n", "p_subset.txt", "expected 20"),
    "index out of range": (GOOD_CANDIDATE, ROW.replace("0 1", "0 2", 1) + "\n", "p_subset.txt", "candidate row 2"),
    "fractional index": (GOOD_CANDIDATE, ROW.replace("0 1", "0 0.5", 1) + "\n", "p_subset.txt", "candidate row 0.5"),
    "no person": (GOOD_CANDIDATE, "", "p_subset.txt", "no person"),
    "no keypoint": (GOOD_CANDIDATE, " ".join(["-1"] * 18 + ["0", "0"]) + "\n", "p_subset.txt", "no keypoint"),
    "nan coordinate": ("nan 100 0.9 0\n", ROW.replace("0 1", "0 -1", 1) + "\n", "p_candidate.txt", "nan"),
    "far outside": ("1e9 100 0.9 0\n", ROW.replace("0 1", "0 -1", 1) + "\n", "p_subset.txt", "far outside"),
}


@pytest.mark.parametrize("case", sorted(PAIR_CASES))
@pytest.mark.parametrize("named", ["p_{}.txt", "p_candidate.txt", "p_subset.txt"])
def test_malformed_pair_is_an_input_error_naming_the_file(tmp_path, case, named):
    candidate, subset, culprit, words = PAIR_CASES[case]
    for name, text in (("p_candidate.txt", candidate), ("p_subset.txt", subset)):
        if text is not None:
            (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as caught:
        read_pose(tmp_path / named)
    message = str(caught.value)
    assert str(tmp_path / culprit) in message and words in message
    assert "\n" not in message and caught.value.hint


JSON_CASES = {
    "invalid syntax": ('{"people": [', "cannot read JSON"),
    "nested beyond the recursion limit": ('{"people": ' + "[" * 100_000 + "]" * 100_000 + "}", "cannot read JSON"),
    "no people key": ('{"version": 1.3}', "no 'people' list"),
    "zero people": ('{"people": []}', "no person"),
    "wrong keypoint count": (json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 57}]}), "57 keypoint numbers"),
    "keypoints not numbers": (json.dumps({"people": [{"pose_keypoints_2d": ["a"] * 54}]}), "not a flat list of numbers"),
    "person without keypoints": (json.dumps({"people": [{"face_keypoints_2d": []}]}),
                                 "person 0 has no pose_keypoints_2d (only face_keypoints_2d)"),
    "3-D keypoints only": (json.dumps({"people": [{"pose_keypoints_3d": [1.0] * 72}]}),
                           "person 0 has no pose_keypoints_2d (only pose_keypoints_3d)"),
    "one list per keypoint": (json.dumps({"people": [{"pose_keypoints_2d": [[1.0, 2.0, 0.9]] * 18}]}),
                              "person 0: pose_keypoints_2d is not a flat list of numbers"),
    "a person that is no object": (json.dumps({"people": [[1.0] * 54]}), "person 0 has no pose_keypoints_2d"),
    "numbers beyond float": ('{"people": [{"pose_keypoints_2d": [' + ",".join(["1" + "0" * 400] * 54) + "]}]}",
                             "person 0 has keypoint numbers beyond any coordinate"),
    "nothing confident": (json.dumps({"people": [{"pose_keypoints_2d": [5.0, 5.0, 0.0] * 18}]}), "no keypoint"),
}


def test_json_of_openpose_before_1_2_is_read(tmp_path):
    """OpenPose before 1.2 named the list "pose_keypoints"."""
    flat = coco_flat({0: (10, 20), 1: (30, 40)})
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 1.0, "people": [{"pose_keypoints": flat}]}))
    new = write_json(tmp_path / "new.json", [flat])
    assert np.array_equal(read_pose(old, (100, 100)).points, read_pose(new, (100, 100)).points)
    assert read_pose(old, (100, 100)).present.sum() == 2


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_malformed_json_is_an_input_error_naming_the_file(tmp_path, case):
    text, words = JSON_CASES[case]
    path = tmp_path / "pose.json"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        read_pose(path, frame=(100, 100))
    message = str(caught.value)
    assert str(path) in message and words in message and "\n" not in message


@pytest.mark.parametrize("name", ["missing.json", "photo_keypoints.txt"])
def test_missing_json_or_unknown_name_is_an_input_error(tmp_path, name):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("1 2 3 4\n")
    with pytest.raises(InputError) as caught:
        read_pose(tmp_path / name, frame=(100, 100))
    assert str(tmp_path / name) in str(caught.value)


def test_json_poses_with_a_byte_order_mark_or_numbers_beyond_float_are_handled(tmp_path, recwarn):
    import json as json_module

    from i2icli.errors import InputError
    from i2icli.semantics.pose import read_pose

    flat = [10.0, 20.0, 0.9] * 18
    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + json_module.dumps({"people": [{"pose_keypoints_2d": flat}]}).encode())
    assert read_pose(with_bom, (100, 100)).present.all()
    huge = tmp_path / "huge.json"
    huge.write_text('{"people": [{"pose_keypoints_2d": [' + ",".join(["1" + "0" * 400] * 54) + "]}]}")
    with pytest.raises(InputError, match="person 0 has"):
        read_pose(huge, (100, 100))
    far = tmp_path / "far.json"
    far.write_text(json_module.dumps({"people": [{"pose_keypoints_2d": [1.7e308, 1.7e308, 0.9] * 18}]}))
    with pytest.raises(InputError, match="far outside the photo"):
        read_pose(far, (100, 100))
    assert not [w for w in recwarn if "overflow" in str(w.message)]


def test_official_pair_with_a_byte_order_mark_is_read(tmp_path):
    """A pair saved by a Windows editor starts with a byte-order mark, as a JSON pose may."""
    (tmp_path / "p_candidate.txt").write_text("\ufeff" + GOOD_CANDIDATE, encoding="utf-8")
    (tmp_path / "p_subset.txt").write_text("\ufeff" + ROW + "\r\n", encoding="utf-8")
    pose = read_pose(tmp_path / "p_subset.txt")
    assert pose.present.tolist() == [k in (0, 1) for k in range(KEYPOINTS)]
    assert pose.points[:2].tolist() == [[100, 100], [200, 200]]


def test_keypoints_outside_the_photo_are_found_in_its_pixels(tmp_path):
    from i2icli.semantics.pose import keypoints_outside

    frame = (750, 1101)  # padded with 175 columns left: the canvas is wider than the photo
    inside = read_pose(write_json(tmp_path / "in.json", [coco_flat({0: (0, 0), 1: (749, 1100), 2: (300, 500)})]), frame)
    assert keypoints_outside(inside, frame) is None
    # Within the canvas, but left of the photo, in its padding.
    beside = read_pose(write_json(tmp_path / "beside.json", [coco_flat({0: (-120, 40), 1: (300, 500)})]), frame)
    assert keypoints_outside(beside, frame) == pytest.approx((-120, 40, 300, 500))
    below = read_pose(write_json(tmp_path / "below.json", [coco_flat({0: (300, 1300)})]), frame)
    assert keypoints_outside(below, frame) == pytest.approx((300, 1300, 300, 1300))
    # Keypoints that are missing (confidence 0, written 0 0 0) are not looked at.
    assert keypoints_outside(make_pose({3: (CANVAS / 2, CANVAS / 2)}), frame) is None
