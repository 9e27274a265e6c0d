"""Pose retargeting (issue 9): synthetic people animated by known joint angles, and real mediapipe landmarks."""
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from posecrafter.pose import FACE, FEET, LEFT_HAND, NUM_POINTS, RIGHT_HAND, PoseSequence, from_pose_keypoint, to_pose_keypoint
from posecrafter.retarget import ANCHORS, BONES, MODES, bone_name, retarget_poses, smooth_keypoints
from tests.comfy_pack import load_pack

FRAMES = 12
REAL_DATA = Path(__file__).parent / "data" / "astronaut_mediapipe_poses.json"

# Training person's bone lengths in pixels (bone -> length) and bone groups for the driving person.
LENGTHS = {
    (1, 2): 40, (1, 5): 40, (2, 3): 60, (3, 4): 55, (5, 6): 60, (6, 7): 55, (1, 8): 110, (8, 9): 90, (9, 10): 85,
    (1, 11): 110, (11, 12): 90, (12, 13): 85, (1, 0): 45, (0, 14): 12, (14, 16): 18, (0, 15): 12, (15, 17): 18,
    (13, 18): 30, (13, 19): 25, (13, 20): 12, (10, 21): 30, (10, 22): 25, (10, 23): 12,
}
ARMS = [(2, 3), (3, 4), (5, 6), (6, 7)]
LEGS = [(8, 9), (9, 10), (11, 12), (12, 13), (13, 18), (13, 19), (13, 20), (10, 21), (10, 22), (10, 23)]
TORSO = [(1, 2), (1, 5), (1, 8), (1, 11)]
HEAD = [(1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
DRIVING_FACTORS = {"arms": 1.25, "legs": 0.8, "torso": 1.1, "head": 0.9}
# Rest direction of every bone (degrees, image coordinates: 0 = right, 90 = down).
REST = {
    (1, 2): 180, (1, 5): 0, (2, 3): 100, (3, 4): 90, (5, 6): 80, (6, 7): 90, (1, 8): 95, (8, 9): 90, (9, 10): 90,
    (1, 11): 85, (11, 12): 90, (12, 13): 90, (1, 0): -90, (0, 14): -150, (14, 16): 180, (0, 15): -30, (15, 17): 0,
    (13, 18): 20, (13, 19): 40, (13, 20): 160, (10, 21): 160, (10, 22): 140, (10, 23): 20,
}


def whole_body_person(lengths, frames=FRAMES, neck_path=((256, 150), (3, 1)), face_size=1.0, hand_size=1.0,
                      canvas=(512, 512)):
    """A whole-body person animated by known joint angles: every bone's angle relative to its parent bone swings
    sinusoidally (each at its own amplitude and phase); the neck moves along a straight path."""
    rng = np.random.default_rng(0)
    face_template = rng.normal(0, 14, (68, 2))
    hand_template = rng.normal(0, 12, (21, 2))
    swing = {bone: (rng.uniform(5, 25), rng.uniform(0, 2 * np.pi)) for bone in BONES}
    points = np.zeros((frames, NUM_POINTS, 2))
    parent_bone = {b: a for a, b in BONES}
    for f in range(frames):
        start, step = np.array(neck_path[0], float), np.array(neck_path[1], float)
        points[f, 1] = start + f * step
        angle = {}
        for bone in BONES:  # BONES lists every parent bone before its children
            amplitude, phase = swing[bone]
            relative = amplitude * math.sin(0.5 * f + phase)
            parent = (parent_bone.get(bone[0]), bone[0])
            base = angle.get(parent, 0.0) + REST[bone] - REST.get(parent, 0.0)
            angle[bone] = base + relative
            rad = math.radians(angle[bone])
            points[f, bone[1]] = points[f, bone[0]] + lengths[bone] * np.array([math.cos(rad), math.sin(rad)])
        points[f, FACE] = points[f, 0] + face_size * face_template
        points[f, LEFT_HAND] = points[f, 7] + hand_size * hand_template
        points[f, RIGHT_HAND] = points[f, 4] + hand_size * hand_template[:, ::-1]
    return PoseSequence(points, np.ones((frames, NUM_POINTS)), *canvas)


def training_person():
    return whole_body_person(LENGTHS)


def driving_person(frames=FRAMES):
    """The same joint angles with other proportions (arms x1.25, legs x0.8, torso x1.1, head x0.9), 1.5x larger
    in pixels, elsewhere on a 1280x720 canvas."""
    factor = {**{b: DRIVING_FACTORS["arms"] for b in ARMS}, **{b: DRIVING_FACTORS["legs"] for b in LEGS},
              **{b: DRIVING_FACTORS["torso"] for b in TORSO}, **{b: DRIVING_FACTORS["head"] for b in HEAD}}
    lengths = {bone: 1.5 * length * factor[bone] for bone, length in LENGTHS.items()}
    return whole_body_person(lengths, frames, neck_path=((700, 200), (-5, 2)), face_size=1.5 * 0.9,
                             hand_size=1.5 * 1.25, canvas=(1280, 720))


def bone_vectors(poses, bone):
    return poses.points[:, bone[1]] - poses.points[:, bone[0]]


def spread(poses, part, centre):
    """RMS distance of a part's points from a centre point, per frame (the part's size)."""
    offsets = poses.points[:, part] - poses.points[:, [centre]]
    return np.sqrt((offsets ** 2).sum(-1).mean(-1))


def without(poses, points, frames=slice(None)):
    scores = poses.scores.copy()
    scores[frames, points] = 0.0
    return replace(poses, scores=scores)


def assert_clean(result, driving):
    """No NaN anywhere, nothing invented: exactly the driving frame's visible points are visible."""
    assert np.isfinite(result.poses.points).all()
    np.testing.assert_array_equal(result.poses.visible, driving.visible)
    json.dumps(to_pose_keypoint(result.poses), allow_nan=False)


# Synthetic person


def test_bones_takes_training_lengths_and_driving_directions():
    training, driving = training_person(), driving_person()
    result = retarget_poses(driving, training, mode="bones")
    out = result.poses
    assert (out.canvas_width, out.canvas_height) == (512, 512)
    for bone in BONES:
        lengths = np.linalg.norm(bone_vectors(out, bone), axis=-1)
        np.testing.assert_allclose(lengths, LENGTHS[bone], rtol=0.01, err_msg=str(bone))
        a, b = bone_vectors(out, bone), bone_vectors(driving, bone)
        cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 0.5, bone
    np.testing.assert_allclose(spread(out, FACE, 0), spread(training, FACE, 0), rtol=0.02)
    np.testing.assert_allclose(spread(out, LEFT_HAND, 7), spread(training, LEFT_HAND, 7), rtol=0.02)
    np.testing.assert_allclose(spread(out, RIGHT_HAND, 4), spread(training, RIGHT_HAND, 4), rtol=0.02)
    assert result.bone_ratios["body"] == pytest.approx(1 / (1.5 * 1.1))
    assert result.bone_ratios["R elbow-R wrist"] == pytest.approx(1 / (1.5 * 1.25))
    assert not result.fallbacks
    assert_clean(result, driving)


def test_hands_follow_the_forearm_and_the_face_the_head():
    # Only the forearms 1.4x longer; the hands as large as the training person's.
    lengths = {**LENGTHS, (3, 4): 1.4 * 55, (6, 7): 1.4 * 55}
    driving = whole_body_person(lengths, face_size=0.5)
    out = retarget_poses(driving, training_person()).poses
    np.testing.assert_allclose(spread(out, RIGHT_HAND, 4), spread(driving, RIGHT_HAND, 4) / 1.4, rtol=1e-9)
    np.testing.assert_allclose(spread(out, LEFT_HAND, 7), spread(driving, LEFT_HAND, 7) / 1.4, rtol=1e-9)
    # The face is half size while the nose-eye-ear bones are not: the head ratio lies between 1 and 2.
    ratio = spread(out, FACE, 0) / spread(driving, FACE, 0)
    assert np.ptp(ratio) < 1e-9 and 1.0 < ratio[0] < 2.0


@pytest.mark.parametrize("mode", ["bones", "global"])
def test_anchor_starts_where_the_training_person_stands_and_keeps_the_scaled_path(mode):
    training, driving = training_person(), driving_person()
    body = 1 / (1.5 * 1.1)
    neck = retarget_poses(driving, training, mode=mode, anchor="neck").poses
    np.testing.assert_allclose(neck.points[0, 1], training.points[0, 1], atol=1e-6)
    np.testing.assert_allclose(neck.points[:, 1] - neck.points[0, 1],
                               body * (driving.points[:, 1] - driving.points[0, 1]), atol=1e-6)

    ground = retarget_poses(driving, training, mode=mode, anchor="ground")
    feet = [10, 13, *range(FEET.start, FEET.stop)]
    out = ground.poses
    assert out.points[0, feet, 1].max() == pytest.approx(training.points[0, feet, 1].max())
    assert out.points[0, 1, 0] == pytest.approx(training.points[0, 1, 0])
    np.testing.assert_allclose(out.points[:, 1] - out.points[0, 1],
                               body * (driving.points[:, 1] - driving.points[0, 1]), atol=1e-6)
    assert retarget_poses(driving, training, mode=mode).anchor == "ground (auto)"


def test_auto_anchor_is_the_neck_for_half_body_clips():
    legs = [8, 9, 10, 11, 12, 13, *range(FEET.start, FEET.stop)]
    training, driving = without(training_person(), legs), without(driving_person(), legs)
    result = retarget_poses(driving, training)
    assert result.anchor == "neck (auto)"
    np.testing.assert_allclose(result.poses.points[0, 1], training.points[0, 1], atol=1e-6)
    assert_clean(result, driving)


def test_global_mode_is_one_scale_and_a_shift():
    training, driving = training_person(), driving_person()
    out = retarget_poses(driving, training, mode="global", anchor="neck").poses
    body = 1 / (1.5 * 1.1)
    shift = out.points[0, 1] - body * driving.points[0, 1]
    np.testing.assert_allclose(out.points, body * driving.points + shift, atol=1e-6)


def test_mode_off_returns_the_driving_poses():
    driving = driving_person()
    result = retarget_poses(driving, training_person(), mode="off")
    assert result.poses is driving
    assert "unchanged" in result.report()


def noisy_person():
    """The training person with detection noise, dropped points and one empty frame."""
    poses = training_person()
    rng = np.random.default_rng(1)
    points = poses.points + rng.normal(0, 2, poses.points.shape)
    scores = np.where(rng.random(poses.scores.shape) < 0.1, 0.0, rng.uniform(0.3, 1.0, poses.scores.shape))
    scores[5] = 0.0
    return replace(poses, points=points, scores=scores)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("anchor", ANCHORS)
def test_a_sequence_onto_itself_is_unchanged(mode, anchor):
    poses = noisy_person()
    out = retarget_poses(poses, poses, mode=mode, anchor=anchor).poses
    visible = poses.visible
    np.testing.assert_array_equal(out.visible, visible)
    assert np.abs(out.points[visible] - poses.points[visible]).max() < 0.5


def full_result(**kwargs):
    return retarget_poses(driving_person(), training_person(), **kwargs).poses


def test_an_arm_missing_in_some_frames_leaves_everything_else_as_it_was():
    arm = [3, 4, *range(RIGHT_HAND.start, RIGHT_HAND.stop)]
    driving = without(driving_person(), arm, slice(2, 5))
    result = retarget_poses(driving, training_person())
    assert_clean(result, driving)
    np.testing.assert_allclose(result.poses.points[driving.visible], full_result().points[driving.visible], atol=1e-6)


def test_a_driving_clip_whose_first_frame_has_no_hands():
    hands = [*range(LEFT_HAND.start, LEFT_HAND.stop), *range(RIGHT_HAND.start, RIGHT_HAND.stop)]
    driving = without(driving_person(), hands, 0)
    result = retarget_poses(driving, training_person())
    assert_clean(result, driving)
    np.testing.assert_allclose(result.poses.points[1:], full_result().points[1:], atol=1e-6)


def test_a_leg_never_visible_in_training_takes_the_other_legs_ratio():
    right_leg = [9, 10, 21, 22, 23]
    training, driving = without(training_person(), right_leg), driving_person()
    result = retarget_poses(driving, training)
    assert_clean(result, driving)
    report = result.report()
    assert "R hip-R knee" in result.fallbacks and "ratio of L hip-L knee" in result.fallbacks["R hip-R knee"]
    assert "fallback: R hip-R knee" in report and "never seen in training" in report
    for bone, partner in (((8, 9), (11, 12)), ((9, 10), (12, 13))):
        np.testing.assert_allclose(np.linalg.norm(bone_vectors(result.poses, bone), axis=-1), LENGTHS[partner],
                                   rtol=0.01)


def test_a_leg_never_visible_in_the_driving_clip_stays_missing():
    left_leg = [12, 13, 18, 19, 20]
    driving = without(driving_person(), left_leg)
    result = retarget_poses(driving, training_person())
    assert_clean(result, driving)
    assert not result.poses.visible[:, left_leg].any()
    assert "never seen in driving" in result.fallbacks["L hip-L knee"]


def test_joints_without_their_parent_hang_from_the_nearest_visible_ancestor():
    # Elbows missing (wrists and hands still visible) and a frame without a neck.
    driving = without(without(driving_person(), [3, 6], slice(0, 4)), [1], 6)
    result = retarget_poses(driving, training_person())
    assert_clean(result, driving)
    full = full_result()
    np.testing.assert_allclose(result.poses.points[4:6], full.points[4:6], atol=1e-6)
    # Shoulder-to-wrist distance with the elbow skipped: the driving distance times the mean arm ratio.
    wrist = np.linalg.norm(result.poses.points[:4, 4] - result.poses.points[:4, 2], axis=-1)
    driving_wrist = np.linalg.norm(driving.points[:4, 4] - driving.points[:4, 2], axis=-1)
    np.testing.assert_allclose(wrist, driving_wrist / (1.5 * 1.25), rtol=1e-6)


def test_a_driving_frame_without_a_person_is_kept_empty_and_reported():
    driving = without(driving_person(), list(range(NUM_POINTS)), 3)
    result = retarget_poses(driving, training_person())
    assert_clean(result, driving)
    assert result.empty_frames == [3]
    assert "nobody in frame(s) 3" in result.report()
    assert to_pose_keypoint(result.poses)[3]["people"] == []


def test_bad_input_names_the_sequence_and_the_fix():
    training, driving = training_person(), driving_person()
    no_torso = without(training, [1, 2, 5, 8, 11])
    with pytest.raises(ValueError, match="training: no frame shows the torso"):
        retarget_poses(driving, no_torso)
    nobody = without(driving, list(range(NUM_POINTS)))
    with pytest.raises(ValueError, match="driving: nobody was detected"):
        retarget_poses(nobody, training)
    legs = [9, 10, 12, 13, *range(FEET.start, FEET.stop)]
    with pytest.raises(ValueError, match="anchor 'ground'.*use anchor neck or auto"):
        retarget_poses(without(driving, legs), training, anchor="ground")
    with pytest.raises(ValueError, match="mode"):
        retarget_poses(driving, training, mode="stretch")


def test_smoothing_leaves_still_poses_and_reduces_jitter():
    still = replace(training_person(), points=np.repeat(training_person().points[:1], FRAMES, axis=0))
    np.testing.assert_allclose(smooth_keypoints(still, 1.0).points, still.points, atol=1e-9)
    rng = np.random.default_rng(2)
    jittery = replace(still, points=still.points + rng.normal(0, 3, still.points.shape))
    smoothed = smooth_keypoints(jittery, 0.8)

    def jitter(poses):
        return np.abs(np.diff(poses.points, axis=0)).mean()

    assert jitter(smoothed) < 0.5 * jitter(jittery)
    result = retarget_poses(jittery, still, smoothing=0.8)
    assert result.smoothing == 0.8 and np.isfinite(result.poses.points).all()


# Real landmarks (mediapipe on a NASA photo, tests/data/make_astronaut_poses.py)


def real_poses():
    record = json.loads(REAL_DATA.read_text())
    return from_pose_keypoint(record["poses"]), from_pose_keypoint(record["rescaled_poses"]), record["rescale"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("anchor", ["auto", "neck"])
def test_real_landmarks_onto_themselves_are_unchanged(mode, anchor):
    poses, _, _ = real_poses()
    out = retarget_poses(poses, poses, mode=mode, anchor=anchor).poses
    np.testing.assert_array_equal(out.visible, poses.visible)
    assert np.abs(out.points[poses.visible] - poses.points[poses.visible]).max() < 0.5


def test_real_landmarks_onto_a_rescaled_copy_recover_the_lengths():
    poses, rescaled, scale = real_poses()
    result = retarget_poses(poses, rescaled)
    out = result.poses
    assert (out.canvas_width, out.canvas_height) == (rescaled.canvas_width, rescaled.canvas_height)
    assert result.bone_ratios["body"] == pytest.approx(scale, rel=0.03)
    assert result.bone_ratios["head"] == pytest.approx(scale, rel=0.03)
    checked = 0
    for bone in BONES:
        seen = [p.visible[:, bone[0]] & p.visible[:, bone[1]] for p in (poses, rescaled, out)]
        # Bones both detections see in at least half of the frames; the wrists under the gloves, seen in a
        # quarter of the frames, are guesses that move between frames.
        if min(seen[0].mean(), seen[1].mean()) < 0.5:
            continue
        checked += 1
        assert result.bone_ratios[bone_name(bone)] == pytest.approx(scale, rel=0.03), bone
        lengths = [np.median(np.linalg.norm(bone_vectors(p, bone)[s], axis=-1)) for p, s in zip((rescaled, out), seen[1:])]
        assert lengths[1] == pytest.approx(lengths[0], rel=0.03), bone
    assert checked >= 10
    assert_clean(result, poses)


# The node


def node():
    return load_pack().NODE_CLASS_MAPPINGS["PoseCrafterPoseRetarget"]()


def test_node_outputs_the_engine_result_a_preview_and_the_report():
    training, driving = training_person(), driving_person()
    pose, preview, report = node().retarget(to_pose_keypoint(driving), to_pose_keypoint(training), "bones", "auto",
                                            0.0)
    expected = retarget_poses(from_pose_keypoint(to_pose_keypoint(driving)), from_pose_keypoint(to_pose_keypoint(training)),
                              names=("target_pose", "training_pose"))
    assert pose == to_pose_keypoint(expected.poses)
    assert report == expected.report()
    assert preview.shape == (FRAMES, 256, 455 + 256, 3)
    assert float(preview.min()) >= 0 and float(preview.max()) <= 1
    assert float(preview[0, :, 455:].max()) > 0  # the retargeted skeleton is drawn


def test_node_preview_of_a_long_video_shows_evenly_spaced_frames_first_and_last_included():
    training, driving = training_person(), driving_person()
    long_driving = replace(driving, points=np.concatenate([driving.points] * 20), scores=np.concatenate([driving.scores] * 20))
    frames = len(long_driving)
    _, preview, _ = node().retarget(to_pose_keypoint(long_driving), to_pose_keypoint(training), "off", "auto",
                                    0.0)
    assert frames > 32 and preview.shape[0] == 32
    pack = load_pack()
    shown = pack.nodes.retarget_nodes.preview_frames(frames)
    assert shown[0] == 0 and shown[-1] == frames - 1 and len(set(shown)) == 32
    assert max(np.diff(shown)) - min(np.diff(shown)) <= 1  # evenly spaced
    _, short, _ = node().retarget(to_pose_keypoint(driving), to_pose_keypoint(training), "off", "auto", 0.0)
    for i, frame in enumerate(shown):  # each panel is the frame it says it is
        assert torch.equal(preview[i], short[frame % FRAMES])


def test_node_errors_name_the_input():
    training = to_pose_keypoint(training_person())
    with pytest.raises(ValueError, match="'target_pose' has no frames"):
        node().retarget([], training, "bones", "auto", 0.0)
    no_torso = to_pose_keypoint(without(training_person(), [1, 2, 5, 8, 11]))
    with pytest.raises(ValueError, match="training_pose: no frame shows the torso"):
        node().retarget(to_pose_keypoint(driving_person()), no_torso, "bones", "auto", 0.0)
