"""Training-frame selection: the paper's uniform stride and the frames covering the target (lowest Video-SIM)."""
import itertools

import numpy as np
import pytest

from benchmarks.poses import dancing_person, dwpose_noise
from posecrafter import training_frames
from posecrafter.pose import PoseSequence
from posecrafter.reference import video_sim
from posecrafter.training_frames import select_covering_frames, uniform_indices


def frames_of(poses, indices):
    return PoseSequence(poses.points[indices], poses.scores[indices], poses.canvas_width, poses.canvas_height)


def clip_and_target(seed, frames=10):
    """A noisy 10-frame training clip (one frame per 1/3 s of a dance) and 20 target poses of another dance."""
    training = dwpose_noise(dancing_person(frames, seed=seed, fps=3), seed=seed)
    return training, dancing_person(20, seed=seed + 500, fps=5)


def brute_force(training, target, count):
    return min(itertools.combinations(range(len(training)), count),
               key=lambda chosen: video_sim(frames_of(training, list(chosen)), target))


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_brute_force_optimum_and_beats_the_uniform_stride(seed):
    training, target = clip_and_target(seed)
    chosen = select_covering_frames(training, target, 3)
    assert chosen == list(brute_force(training, target, 3))
    assert video_sim(frames_of(training, chosen), target) <= video_sim(frames_of(training, uniform_indices(10, 3)), target)


@pytest.mark.parametrize("seed", range(20))
def test_the_search_for_large_clips_is_never_worse_than_the_uniform_stride(seed, monkeypatch):
    monkeypatch.setattr(training_frames, "EXHAUSTIVE_SETS", 0)  # greedy + swaps, as for long clips
    training, target = clip_and_target(seed)
    chosen = select_covering_frames(training, target, 3)
    assert len(set(chosen)) == 3 and chosen == sorted(chosen)
    sim = video_sim(frames_of(training, chosen), target)
    assert sim <= video_sim(frames_of(training, uniform_indices(10, 3)), target)
    best = video_sim(frames_of(training, list(brute_force(training, target, 3))), target)
    assert sim <= best * 1.01  # a local optimum; within 1% of the optimum on these cases


def test_includes_the_training_frame_the_target_repeats():
    clean = dancing_person(60, seed=7, fps=6)
    training = dwpose_noise(clean, seed=7)
    target = frames_of(clean, [41] * 30 + list(range(0, 60, 7)))  # holds the pose of frame 41 for 30 frames
    assert 41 in select_covering_frames(training, target, 8)
    assert 41 not in uniform_indices(60, 8)


@pytest.mark.parametrize("exhaustive", [True, False])
def test_ties_go_to_the_uniform_stride(exhaustive, monkeypatch):
    if not exhaustive:
        monkeypatch.setattr(training_frames, "EXHAUSTIVE_SETS", 0)
    still = dancing_person(1, seed=3)
    training = PoseSequence(np.repeat(still.points, 40, axis=0), np.ones((40, 134)), 512, 512)
    assert select_covering_frames(training, dancing_person(10, seed=1), 4) == uniform_indices(40, 4) == [0, 10, 20, 30]


def test_frames_without_a_person_are_never_chosen():
    training, target = clip_and_target(1)
    scores = training.scores.copy()
    scores[[0, 3, 6]] = 0.0
    emptied = PoseSequence(training.points, scores, 512, 512)
    chosen = select_covering_frames(emptied, target, 7)
    assert chosen == [1, 2, 4, 5, 7, 8, 9]


def test_bad_input_names_the_argument():
    training, target = clip_and_target(2)
    with pytest.raises(ValueError, match="count: 11 frames asked for, but the training clip has 10 frames"):
        select_covering_frames(training, target, 11)
    with pytest.raises(ValueError, match="count: 0 frames"):
        select_covering_frames(training, target, 0)
    with pytest.raises(ValueError, match="training: zero frames"):
        select_covering_frames(frames_of(training, []), target, 1)
    with pytest.raises(ValueError, match="target: zero frames"):
        select_covering_frames(training, frames_of(target, []), 1)
    nobody = PoseSequence(training.points, np.zeros_like(training.scores), 512, 512)
    with pytest.raises(ValueError, match="training: nobody was detected"):
        select_covering_frames(nobody, target, 1)
    with pytest.raises(ValueError, match="distance: must be one of visible, paper"):
        select_covering_frames(training, target, 2, distance="l2")
