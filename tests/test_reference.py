"""Reference-frame selection (Eq. 5), Video-SIM and reference-pose insertion/removal, on toy poses."""
import math

import numpy as np
import pytest
import torch

from posecrafter.pose import NUM_POINTS, PoseSequence, from_pose_keypoint, to_pose_keypoint
from posecrafter.reference import (
    insert_reference_pose,
    pose_vectors,
    remove_inserted_reference,
    select_reference_frame,
    video_sim,
)

NOSE, NECK, L_FOOT = 0, 1, 18


def toy_poses(frames, canvas):
    """frames: list of {point index: (x, y)}; every other point is missing."""
    points = np.zeros((len(frames), NUM_POINTS, 2))
    scores = np.zeros((len(frames), NUM_POINTS))
    for f, visible in enumerate(frames):
        for index, xy in visible.items():
            points[f, index], scores[f, index] = xy, 1.0
    return PoseSequence(points, scores, canvas, canvas)


# Training poses on a 10x10 canvas, target poses on a 20x20 canvas (normalised: same scale).
TRAINING = toy_poses([{NOSE: (5, 5)}, {NOSE: (2, 6)}, {}, {NOSE: (5, 5), NECK: (5, 5)}], canvas=10)
TARGET = toy_poses([{NOSE: (10, 10)}, {NOSE: (8, 12)}], canvas=20)


def test_pose_vector_normalises_and_marks_missing_points():
    vector = pose_vectors(TARGET)
    assert vector.shape == (2, 256)  # 18 body + 68 face + 42 hand points, feet excluded
    np.testing.assert_allclose(vector[1, :4], [0.4, 0.6, -1, -1])
    assert (vector[:, 2:] == -1).all()
    with_foot = toy_poses([{L_FOOT: (3, 3)}], canvas=10)
    assert (pose_vectors(with_foot) == -1).all()


def test_eq5_sums_plain_l2_distances_over_the_target_sequence():
    choice = select_reference_frame(TRAINING, TARGET, distance="paper")
    # training 0: 0 + |(.5,.5)-(.4,.6)|; training 1: |(.2,.6)-(.5,.5)| + |(.2,.6)-(.4,.6)|;
    # training 2: nobody -> never chosen; training 3: its neck is missing in the targets (-1 vs .5)
    expected = [math.sqrt(0.02), math.sqrt(0.1) + 0.2, math.inf, math.sqrt(4.5) + math.sqrt(4.52)]
    np.testing.assert_allclose(choice.distances, expected)
    assert choice.index == 0


@pytest.mark.parametrize("distance", ["visible", "paper"])
def test_ties_go_to_the_earliest_frame(distance):
    a, b = {NOSE: (2, 6)}, {NOSE: (5, 5)}
    assert select_reference_frame(toy_poses([a, b, b], canvas=10), TARGET, distance).index == 1
    assert select_reference_frame(toy_poses([b, b, a], canvas=10), TARGET, distance).index == 0


def test_video_sim_sums_the_nearest_squared_distances():
    # target 0: nearest is training 0 (0); target 1: nearest is training 0 (0.02)
    assert video_sim(TRAINING, TARGET, "paper") == pytest.approx(0.02)
    # with training 0 removed: target 0 -> training 1 (0.1), target 1 -> training 1 (0.04)
    assert video_sim(toy_poses([{NOSE: (2, 6)}], canvas=10), TARGET, "paper") == pytest.approx(0.14)


def test_training_clip_without_anybody_is_an_error():
    nobody = toy_poses([{}, {}], canvas=10)
    with pytest.raises(ValueError, match="training_poses: nobody was detected"):
        select_reference_frame(nobody, TARGET)
    with pytest.raises(ValueError, match="training_poses"):
        video_sim(nobody, TARGET)


def test_insertion_puts_the_rescaled_reference_at_k():
    extended = insert_reference_pose(TARGET, TRAINING.frame(1))
    assert len(extended) == 3 and extended.inserted_reference == 0
    np.testing.assert_allclose(extended.points[0, NOSE], [4, 12])  # (2, 6) on 10x10 -> 20x20
    np.testing.assert_array_equal(extended.points[1:], TARGET.points)
    at_end = insert_reference_pose(TARGET, TRAINING.frame(1), k=2)
    assert at_end.inserted_reference == 2
    np.testing.assert_array_equal(at_end.points[:2], TARGET.points)


@pytest.mark.parametrize("k", [-1, 3])
def test_k_outside_0_to_m_is_an_error(k):
    with pytest.raises(ValueError, match=r"k: must be in 0\.\.2"):
        insert_reference_pose(TARGET, TRAINING.frame(0), k=k)


def test_removal_from_latents_frames_poses_and_pose_keypoint():
    extended = insert_reference_pose(TARGET, TRAINING.frame(1), k=1)
    latents = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 4, 2, 2)
    torch.testing.assert_close(remove_inserted_reference(latents, extended)[:, 0, 0, 0], torch.tensor([0.0, 2.0]))
    frames = np.arange(3)[:, None, None, None] * np.ones((3, 2, 2, 3))
    np.testing.assert_array_equal(remove_inserted_reference(frames, extended)[:, 0, 0, 0], [0, 2])
    restored = remove_inserted_reference(extended, extended)
    np.testing.assert_array_equal(restored.points, TARGET.points)
    assert restored.inserted_reference is None
    # the marker survives a trip through ComfyUI as POSE_KEYPOINT
    keypoint = to_pose_keypoint(extended)
    torch.testing.assert_close(remove_inserted_reference(latents, keypoint)[:, 0, 0, 0], torch.tensor([0.0, 2.0]))
    assert from_pose_keypoint(keypoint).inserted_reference == 1


def test_removal_needs_the_matching_batch_and_a_marker():
    extended = insert_reference_pose(TARGET, TRAINING.frame(1))
    with pytest.raises(ValueError, match="batch: has 2 frames"):
        remove_inserted_reference(torch.zeros(2, 4, 2, 2), extended)
    with pytest.raises(ValueError, match="no inserted reference"):
        remove_inserted_reference(torch.zeros(2, 4, 2, 2), TARGET)
