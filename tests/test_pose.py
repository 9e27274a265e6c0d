"""POSE_KEYPOINT reading/writing and the internal pose arrays (spec 7.5)."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from posecrafter.pose import (
    BODY,
    FACE,
    FEET,
    INSERTED_REFERENCE_KEY,
    LEFT_HAND,
    NUM_POINTS,
    RIGHT_HAND,
    PoseSequence,
    from_pose_keypoint,
    interpolate_empty_frames,
    to_pose_keypoint,
)

SAMPLE = Path(__file__).parent / "data" / "pose_keypoint_dwpose.json"


def load_sample():
    return json.loads(SAMPLE.read_text())


def random_poses(frames=3, width=640, height=480, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.uniform(2, [width - 2, height - 2], (frames, NUM_POINTS, 2))
    scores = rng.uniform(0, 1, (frames, NUM_POINTS))
    return PoseSequence(points, scores, width, height)


def test_sample_in_the_controlnet_aux_structure_parses():
    poses = from_pose_keypoint(load_sample())
    assert len(poses) == 2
    assert (poses.canvas_width, poses.canvas_height) == (640, 480)
    # body: 17 visible points, the L ear (17) written as 0,0,0 is not
    assert poses.visible[0, BODY].sum() == 17 and not poses.visible[0, 17]
    np.testing.assert_array_equal(poses.points[0, 4], [240, 300])  # R wrist
    np.testing.assert_array_equal(poses.points[0, 15], [332, 90])  # L eye
    # face: 68 landmarks, one of them invisible; the 2 appended eye points are not face landmarks
    assert poses.visible[0, FACE].sum() == 67 and not poses.visible[0, FACE][5]
    np.testing.assert_allclose(poses.points[0, FACE][0], [342, 100])
    # left hand present, right hand null, no feet in the format
    assert poses.visible[0, LEFT_HAND].all()
    np.testing.assert_array_equal(poses.points[0, LEFT_HAND][0], [400, 300])
    assert not poses.visible[0, RIGHT_HAND].any() and not poses.visible[0, FEET].any()
    # people: [] -> nobody
    assert poses.empty_frames == [1]


def test_normalised_coordinates_are_scaled_to_the_canvas():
    frames = load_sample()
    person = frames[0]["people"][0]
    for key in ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d"):
        values = person[key]
        for i in range(0, len(values), 3):
            values[i] /= 640
            values[i + 1] /= 480
    poses = from_pose_keypoint(frames)
    reference = from_pose_keypoint(load_sample())
    np.testing.assert_allclose(poses.points[0][poses.visible[0]], reference.points[0][reference.visible[0]])
    np.testing.assert_array_equal(poses.visible, reference.visible)


def test_null_parts_and_empty_people_parse():
    frames = [
        {"people": [{"pose_keypoints_2d": [10.0, 20.0, 1.0] + [0.0] * 51, "face_keypoints_2d": None,
                     "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}],
         "canvas_height": 100, "canvas_width": 50},
        {"people": [], "canvas_height": 100, "canvas_width": 50},
    ]
    poses = from_pose_keypoint(frames)
    assert poses.visible[0].sum() == 1 and poses.visible[0, 0]
    assert poses.empty_frames == [1]


def test_most_confident_person_is_kept():
    weak = {"pose_keypoints_2d": [5.0, 5.0, 1.0] + [0.0] * 51}
    strong = {"pose_keypoints_2d": [30.0, 40.0, 1.0, 31.0, 41.0, 1.0] + [0.0] * 48}
    poses = from_pose_keypoint([{"people": [weak, strong], "canvas_height": 100, "canvas_width": 100}])
    np.testing.assert_array_equal(poses.points[0, 0], [30, 40])


def test_write_then_read_is_lossless_for_visible_points():
    poses = random_poses()
    restored = from_pose_keypoint(json.loads(json.dumps(to_pose_keypoint(poses))))
    shown = np.ones(NUM_POINTS, bool)
    shown[FEET] = False  # feet are not part of POSE_KEYPOINT (and never drawn)
    np.testing.assert_array_equal(restored.visible[:, shown], poses.visible[:, shown])
    visible = poses.visible & shown
    np.testing.assert_array_equal(restored.points[visible], poses.points[visible])
    assert (restored.canvas_width, restored.canvas_height) == (640, 480)


def test_written_structure_matches_controlnet_aux():
    poses = random_poses(frames=2)
    scores = poses.scores.copy()
    scores[0, RIGHT_HAND] = 0.0  # a hand without visible points is written as null
    scores[1] = 0.0  # nobody
    frames = to_pose_keypoint(PoseSequence(poses.points, scores, 640, 480))
    person = frames[0]["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["hand_left_keypoints_2d"]) == 63
    assert person["hand_right_keypoints_2d"] is None
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    np.testing.assert_array_equal(face[68:], body[[14, 15]])  # R eye, then L eye appended
    body_visible = poses.visible[0, BODY]
    assert set(body[body_visible, 2]) == {1.0} and not body[~body_visible].any()
    assert frames[1]["people"] == []
    assert (frames[0]["canvas_width"], frames[0]["canvas_height"]) == (640, 480)
    assert INSERTED_REFERENCE_KEY not in frames[0]


def test_inserted_reference_marker_survives_pose_keypoint():
    poses = random_poses(frames=3)
    marked = PoseSequence(poses.points, poses.scores, 640, 480, inserted_reference=1)
    frames = to_pose_keypoint(marked)
    assert frames[1][INSERTED_REFERENCE_KEY] is True
    assert from_pose_keypoint(copy.deepcopy(frames)).inserted_reference == 1


def test_frames_on_another_canvas_are_rescaled_to_the_first():
    frames = [
        {"people": [{"pose_keypoints_2d": [10.0, 20.0, 1.0] + [0.0] * 51}], "canvas_height": 100, "canvas_width": 100},
        {"people": [{"pose_keypoints_2d": [10.0, 20.0, 1.0] + [0.0] * 51}], "canvas_height": 200, "canvas_width": 50},
    ]
    poses = from_pose_keypoint(frames)
    np.testing.assert_allclose(poses.points[1, 0], [20, 10])


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "zero frames"),
        ({"people": [], "canvas_width": 1, "canvas_height": 1}, "list"),
        ([{"people": []}], "canvas_width"),
        ([{"people": [{"pose_keypoints_2d": [1.0, 2.0]}], "canvas_width": 9, "canvas_height": 9}], "54 numbers"),
    ],
)
def test_bad_pose_keypoint_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        from_pose_keypoint(bad)


def test_pose_errors_name_the_input_and_frame():
    good = {"people": [], "canvas_width": 9, "canvas_height": 9}
    bad = {"people": [{"pose_keypoints_2d": [1.0, 2.0]}], "canvas_width": 9, "canvas_height": 9}
    with pytest.raises(ValueError, match=r"^target_pose\[2\]\.people\[\]\.pose_keypoints_2d: expected 54"):
        from_pose_keypoint([good, good, bad], "target_pose")
    with pytest.raises(ValueError, match=r"^training_pose\[1\]: needs integer 'canvas_width'"):
        from_pose_keypoint([good, {"people": []}], "training_pose")


def test_gaps_are_interpolated_from_neighbours():
    points = np.zeros((5, NUM_POINTS, 2))
    scores = np.zeros((5, NUM_POINTS))
    points[1, 0], scores[1, :2] = [10, 20], 0.9
    points[4, 0], scores[4, 0] = [40, 50], 0.5
    filled = interpolate_empty_frames(PoseSequence(points, scores, 64, 64))
    np.testing.assert_allclose(filled.points[0, 0], [10, 20])  # before the first detection: copy
    np.testing.assert_allclose(filled.points[2, 0], [20, 30])  # 1/3 of the way from frame 1 to frame 4
    np.testing.assert_allclose(filled.points[3, 0], [30, 40])
    assert filled.scores[2, 0] == 0.5 and not filled.visible[2, 1]  # point 1 is missing in frame 4
    assert filled.empty_frames == []


def test_interpolating_a_clip_without_anybody_is_an_error():
    empty = PoseSequence(np.zeros((3, NUM_POINTS, 2)), np.zeros((3, NUM_POINTS)), 64, 64)
    with pytest.raises(ValueError, match="nobody was detected"):
        interpolate_empty_frames(empty)
