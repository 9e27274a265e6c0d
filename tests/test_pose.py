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
    points[:, [LEFT_HAND.start, RIGHT_HAND.start]] = points[:, [7, 4]]  # a hand's point 0 is its wrist (L 7, R 4)
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
    np.testing.assert_array_equal(restored.visible, poses.visible)  # feet included (foot_keypoints_2d)
    np.testing.assert_array_equal(restored.points[poses.visible], poses.points[poses.visible])
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
        ([], "has no frames"),
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
    with pytest.raises(ValueError, match=r"^target_pose\[2\]\.people\[0\]\.pose_keypoints_2d: expected 54"):
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


def frame_with(person, width=100, height=80):
    return {"people": [person], "canvas_width": width, "canvas_height": height}


def body(*triples):
    """pose_keypoints_2d with the given leading (x, y, c) triples, the rest missing."""
    values = [v for t in triples for v in t]
    return values + [0.0] * (54 - len(values))


@pytest.mark.parametrize(
    "bad, match",
    [
        ("[{'people': []}]", r"^target_pose: expected POSE_KEYPOINT, a list of frame dicts, got the text"),
        ([{"people": [], "canvas_width": float("inf"), "canvas_height": 80}],
         r"^target_pose\[0\]: needs integer 'canvas_width' and 'canvas_height' from 1 to 65536 .* canvas_width = inf"),
        ([{"people": [], "canvas_width": 100, "canvas_height": 80.5}], r"canvas_height = 80.5"),
        ([{"people": 5, "canvas_width": 100, "canvas_height": 80}],
         r"^target_pose\[0\]\.people: expected a list of person dicts, got int 5"),
        ([frame_with(["x"])], r"^target_pose\[0\]\.people\[0\]: expected a person dict"),
        ([frame_with({"pose_keypoints_2d": ["1"] * 54})],
         r"^target_pose\[0\]\.people\[0\]\.pose_keypoints_2d: expected a flat list of 54 numbers .* holds text"),
        ([frame_with({"pose_keypoints_2d": "10, 20, 1"})], r"pose_keypoints_2d: expected a flat list .* got the text"),
        ([frame_with({"pose_keypoints_2d": [[10.0, 20.0, 1.0]] * 17 + [[1.0, 2.0]]})],
         r"pose_keypoints_2d: expected .* lists of different lengths"),
        ([frame_with({"pose_keypoints_2d": {"x": 1.0, "y": 2.0}})], r"pose_keypoints_2d: expected .* got dict"),
        ([frame_with({"pose_keypoints_2d": body((1e300, 20.0, 1.0))})],
         r"pose_keypoints_2d: point 0 at \(1e\+300, 20\) lies more than one canvas size outside the 100x80 canvas"),
        ([frame_with({"pose_keypoints_2d": body((50.0, 20.0, 1.0), (float("nan"), 20.0, 1.0))})],
         r"^target_pose\[0\]\.people\[0\]\.pose_keypoints_2d: point 1 is marked visible .* \(nan, 20.0\)"),
        ([frame_with({"pose_keypoints_2d": body((50.0, 20.0, float("nan")))})], r"point 0 has confidence nan"),
    ],
)
def test_malformed_pose_keypoint_names_the_input_frame_and_part(bad, match):
    with pytest.raises(ValueError, match=match):
        from_pose_keypoint(bad, "target_pose")


def test_pose_sequence_refuses_a_canvas_of_infinite_size():
    with pytest.raises(ValueError, match="canvas_width/canvas_height: must be positive pixel counts, got infx64"):
        PoseSequence(np.zeros((1, NUM_POINTS, 2)), np.zeros((1, NUM_POINTS)), float("inf"), 64)


def test_missing_points_may_hold_any_coordinates():
    person = {"pose_keypoints_2d": body((50.0, 20.0, 1.0), (float("nan"), float("inf"), 0.0), (1e300, 5.0, 0.1))}
    poses = from_pose_keypoint([frame_with(person)])
    assert poses.visible[0].sum() == 1
    np.testing.assert_array_equal(poses.points[0, 1:3], 0.0)  # stored as 0, never NaN
    assert np.isfinite(poses.points).all()


def test_normalised_or_pixels_is_decided_per_part():
    normalised_hand = [v for i in range(21) for v in (0.9 + 0.006 * i, 0.5, 1.0)]  # fingertip at x = 1.02
    person = {
        "pose_keypoints_2d": body((0.5, 0.25, 1.0), (0.5, 0.5, 1.0)),  # normalised body
        "hand_left_keypoints_2d": normalised_hand,
        "hand_right_keypoints_2d": [v for i in range(21) for v in (30.0 + i, 40.0, 1.0)],  # pixels
    }
    poses = from_pose_keypoint([frame_with(person, width=200, height=100)])
    np.testing.assert_allclose(poses.points[0, :2], [[100, 25], [100, 50]])
    np.testing.assert_allclose(poses.points[0, LEFT_HAND][-1], [1.02 * 200, 50])
    np.testing.assert_allclose(poses.points[0, RIGHT_HAND][0], [30, 40])


def sdpose_frame(points, scores, width, height):
    """One frame exactly as core ComfyUI's SDPose Keypoint Extractor writes it (comfy_extras/nodes_sdpose.py,
    _to_openpose_frames): pixel coordinates with the model's confidences for every point, 6 foot points,
    70 face points (68 + R eye + L eye of the body) and the 134-point layout's 92-112 under hand_right."""
    def flat(index):
        return np.column_stack([points[index], scores[index]]).reshape(-1).tolist()

    return {"canvas_width": width, "canvas_height": height, "people": [{
        "pose_keypoints_2d": flat(np.r_[0:18]),
        "foot_keypoints_2d": flat(np.r_[18:24]),
        "face_keypoints_2d": flat(np.r_[24:92, 14, 15]),
        "hand_right_keypoints_2d": flat(np.r_[92:113]),
        "hand_left_keypoints_2d": flat(np.r_[113:134]),
    }]}


def test_sdpose_frames_are_read_with_visibility_by_score():
    rng = np.random.default_rng(3)
    points = rng.uniform(5, [635, 475], (NUM_POINTS, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, NUM_POINTS).astype(np.float32)
    scores[LEFT_HAND] = 0.05  # a hand SDPose scored low: present in the JSON, not visible
    points[FEET][0] = [-1, -1]  # SDPose writes -1 for points it could not place
    scores[FEET][0] = 0.0
    scores[[4, 7, RIGHT_HAND.start]] = 0.9
    points[[LEFT_HAND.start, RIGHT_HAND.start]] = points[[7, 4]] + 1.5  # each hand at its own wrist
    frame = json.loads(json.dumps(sdpose_frame(points, scores, 640, 480)))
    poses = from_pose_keypoint([frame])
    expected_points, expected_scores = points, scores
    np.testing.assert_array_equal(poses.visible[0], expected_scores >= 0.3)
    np.testing.assert_allclose(poses.scores[0], expected_scores)
    visible = poses.visible[0]
    np.testing.assert_allclose(poses.points[0][visible], expected_points[visible])
    assert poses.visible[0, FEET].sum() == (scores[19:24] >= 0.3).sum()
    np.testing.assert_array_equal(poses.points[0, FEET][0], [0, 0])


def test_feet_round_trip_and_are_left_out_when_missing():
    poses = random_poses(frames=2)
    scores = poses.scores.copy()
    scores[0, FEET] = [0.9, 0.0, 0.8, 0.1, 0.5, 0.0]
    scores[1, FEET] = 0.0
    frames = to_pose_keypoint(PoseSequence(poses.points, scores, 640, 480))
    feet = np.array(frames[0]["people"][0]["foot_keypoints_2d"]).reshape(6, 3)
    np.testing.assert_array_equal(feet[:, 2], [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(feet[0, :2], poses.points[0, 18])
    assert "foot_keypoints_2d" not in frames[1]["people"][0]
    restored = from_pose_keypoint(json.loads(json.dumps(frames)))
    np.testing.assert_array_equal(restored.visible[:, FEET], scores[:, FEET] >= 0.3)
    np.testing.assert_array_equal(restored.points[0, FEET][[0, 2, 4]], poses.points[0, FEET][[0, 2, 4]])


def test_hands_are_given_to_the_wrist_they_sit_at():
    """SDPose labels COCO-WholeBody's left hand (points 92-112, at the L wrist) hand_right: it still ends up as the
    left hand; controlnet_aux's labels, which agree with the wrists, are kept."""
    poses = random_poses(frames=1)
    scores = poses.scores.copy()
    scores[0, [4, 7, LEFT_HAND.start, RIGHT_HAND.start]] = 1.0
    poses = PoseSequence(poses.points, scores, 640, 480)
    sdpose = from_pose_keypoint([sdpose_frame(poses.points[0], poses.scores[0], 640, 480)])
    controlnet_aux = from_pose_keypoint(to_pose_keypoint(poses))
    for restored in (sdpose, controlnet_aux):
        np.testing.assert_array_equal(restored.points[0][restored.visible[0]], poses.points[0][poses.visible[0]])
        np.testing.assert_array_equal(restored.visible, poses.visible)
    one_hand = copy.deepcopy(to_pose_keypoint(poses))
    person = one_hand[0]["people"][0]
    person["hand_right_keypoints_2d"], person["hand_left_keypoints_2d"] = person["hand_left_keypoints_2d"], None
    moved = from_pose_keypoint(one_hand)
    assert not moved.visible[0, RIGHT_HAND].any()
    np.testing.assert_array_equal(moved.points[0, LEFT_HAND][0], poses.points[0, 7])
