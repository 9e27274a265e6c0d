"""Reference frame: selection (Eq. 5, spec 5.1), Video-SIM (spec 5.6), insertion and removal (spec 5.3)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .pose import BODY, FACE, INSERTED_REFERENCE_KEY, LEFT_HAND, RIGHT_HAND, PoseSequence

_MATCHED_POINTS = np.r_[BODY, FACE, LEFT_HAND, RIGHT_HAND]  # 18 + 68 + 2 x 21 = 128 points, feet excluded


def pose_vectors(poses: PoseSequence) -> np.ndarray:
    """v(p) of spec 5.1 for every frame: [F, 256] = (x/W, y/H) of the 128 body, face and hand points,
    an undetected point being (-1, -1) as in the DWPose annotator."""
    normalised = poses.points[:, _MATCHED_POINTS] / [poses.canvas_width, poses.canvas_height]
    normalised[~poses.visible[:, _MATCHED_POINTS]] = -1.0
    return normalised.reshape(len(poses), -1)


DISTANCES = ("visible", "paper")
# [ours] The "visible" distance: a point farther apart than this (canvas units, x/W and y/H), or seen in only
# one of the two poses, counts as this far. 0.05 is 26 px on a 512 px canvas, several times DWPose's jitter
# (a few px): a misdetected or flickering point costs no more than one joint in a clearly different place.
# (With 0.1 the equal frame of the README's trial was found less often: 95% instead of 99% for 16 frames.)
FAR = 0.05
# Where body, face, left hand and right hand start among the 128 matched points.
_PART_STARTS = np.cumsum([0] + [part.stop - part.start for part in (BODY, FACE, LEFT_HAND)])
_TARGET_CHUNK = 64  # target poses per step of a distance computation: bounded memory for long videos


def _target_chunks(count: int):
    return (slice(start, start + _TARGET_CHUNK) for start in range(0, count, _TARGET_CHUNK))


def _paper_distances(training: np.ndarray, target: np.ndarray, squared: bool) -> np.ndarray:
    """[N, M] L2 (or squared L2) between pose vectors, target chunk by target chunk."""
    distances = np.empty((len(training), len(target)))
    for chunk in _target_chunks(len(target)):
        apart = training[:, None] - target[None, chunk]
        distances[:, chunk] = (apart**2).sum(axis=-1) if squared else np.linalg.norm(apart, axis=-1)
    return distances


def pose_distances(training_poses: PoseSequence, target_poses: PoseSequence, distance: str = "visible") -> np.ndarray:
    """[N, M] distance of every training pose to every target pose.

    ``"paper"``: ||v(p_i) - v(p'_l)||_2 of Eq. 5 (a missing point is -1, so one point flickering between
    visible and missing outweighs the whole pose difference). ``"visible"`` [ours]: per body part (body,
    face, each hand), the mean over the points visible in either pose of the point distance in canvas units
    (x/W, y/H), capped at ``FAR``, a point visible in only one of the two poses counting ``FAR``; then the
    mean over the parts visible in either pose. Capping keeps noisy and misdetected points from dominating;
    counting one-sided points as far keeps a frame that shares few visible points with the target from
    winning by having few points; averaging per part keeps the 68 face points (which move with the head)
    from outweighing the 18 body points.
    """
    _check_distance(distance)
    training, target = _checked_vectors(training_poses, target_poses)
    if distance == "paper":
        return _paper_distances(training, target, squared=False)
    training_visible = training_poses.visible[:, _MATCHED_POINTS]
    target_visible = target_poses.visible[:, _MATCHED_POINTS]
    training, target = training.reshape(len(training), -1, 2), target.reshape(len(target), -1, 2)
    distances = np.empty((len(training), len(target)))
    for chunk in _target_chunks(len(target)):
        apart = np.linalg.norm(training[:, None] - target[None, chunk], axis=-1)  # [N, m, 128]
        both = training_visible[:, None] & target_visible[None, chunk]
        either = training_visible[:, None] | target_visible[None, chunk]
        cost = np.where(both, np.minimum(apart, FAR), np.where(either, FAR, 0.0))
        part_cost = np.add.reduceat(cost, _PART_STARTS, axis=-1)
        part_points = np.add.reduceat(either, _PART_STARTS, axis=-1)
        seen = part_points > 0
        part_mean = np.divide(part_cost, part_points, out=np.zeros_like(part_cost), where=seen)
        parts = seen.sum(axis=-1)
        distances[:, chunk] = np.divide(part_mean.sum(axis=-1), parts, out=np.full(parts.shape, FAR), where=parts > 0)
    return distances


@dataclass(frozen=True)
class ReferenceChoice:
    """Result of Eq. 5: the chosen training frame and, per training frame, its summed distance to the
    target poses (inf for frames where nobody was detected, which are never chosen)."""

    index: int
    distances: np.ndarray


def select_reference_frame(
    training_poses: PoseSequence, target_poses: PoseSequence, distance: str = "visible"
) -> ReferenceChoice:
    """Eq. 5: ref = argmin_i sum_l d(p_i, p'_l), d from ``pose_distances`` (``"paper"``: plain L2, spec 9 #7);
    ties go to the earliest frame."""
    distances = pose_distances(training_poses, target_poses, distance).sum(axis=1)
    distances[training_poses.empty_frames] = np.inf
    return ReferenceChoice(index=int(np.argmin(distances)), distances=distances)


def video_sim(training_poses: PoseSequence, target_poses: PoseSequence, distance: str = "visible") -> float:
    """Video-SIM (supplement Eq. 2, spec 5.6): sum_l min_i d(p'_l, p_i)^2 over training frames with a detected
    person, d from ``pose_distances`` (``"paper"``: L2, so squared L2 as in the supplement). Lower means the
    training clip covers the target motion better."""
    return float(squared_pose_distances(training_poses, target_poses, distance).min(axis=1).sum())


def squared_pose_distances(
    training_poses: PoseSequence, target_poses: PoseSequence, distance: str = "visible"
) -> np.ndarray:
    """[M, N] d(p'_l, p_i)^2 of Video-SIM, inf for training frames where nobody was detected."""
    _check_distance(distance)
    if distance == "paper":
        squared = _paper_distances(*_checked_vectors(training_poses, target_poses), squared=True).T
    else:
        squared = pose_distances(training_poses, target_poses, distance).T ** 2
    squared[:, training_poses.empty_frames] = np.inf
    return squared


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"distance: must be one of {', '.join(DISTANCES)}, got {distance!r}")


def _checked_vectors(training_poses: PoseSequence, target_poses: PoseSequence) -> tuple[np.ndarray, np.ndarray]:
    if len(target_poses) == 0:
        raise ValueError("target_poses: zero frames; pass the pose sequence the video should follow")
    if len(training_poses) == 0 or len(training_poses.empty_frames) == len(training_poses):
        raise ValueError(
            "training_poses: nobody was detected in any frame of the training clip; "
            "use a clip in which the person is clearly visible"
        )
    return pose_vectors(training_poses), pose_vectors(target_poses)


def insert_reference_pose(target_poses: PoseSequence, reference_pose: PoseSequence, k: int = 0) -> PoseSequence:
    """Spec 5.3: the M+1 sequence with the reference pose at position k (default 0, the key frame).

    The reference pose is rescaled onto the target canvas (rendering scales both the same way), and
    the result remembers k (``inserted_reference``, written to POSE_KEYPOINT as
    ``"posecrafter_inserted_reference": true`` on that frame) so ``remove_inserted_reference`` can
    drop it again.
    """
    if len(reference_pose) != 1:
        raise ValueError(f"reference_pose: expected a single pose, got {len(reference_pose)}; use poses.frame(index)")
    if len(target_poses) == 0:
        raise ValueError("target_poses: zero frames; pass the pose sequence the video should follow")
    if target_poses.inserted_reference is not None:
        raise ValueError("target_poses: already contains an inserted reference pose; insert it only once")
    if not 0 <= k <= len(target_poses):
        raise ValueError(f"k: must be in 0..{len(target_poses)} (M = number of target poses), got {k}")
    reference = reference_pose.on_canvas(target_poses.canvas_width, target_poses.canvas_height)
    points = np.insert(target_poses.points, k, reference.points[0], axis=0)
    scores = np.insert(target_poses.scores, k, reference.scores[0], axis=0)
    return PoseSequence(points, scores, target_poses.canvas_width, target_poses.canvas_height, inserted_reference=k)


def inserted_reference_index(poses: PoseSequence | list[dict]) -> int:
    """Position k of the inserted reference in a PoseSequence or a POSE_KEYPOINT list."""
    if isinstance(poses, PoseSequence):
        index = poses.inserted_reference
    else:
        marked = [f for f, frame in enumerate(poses) if isinstance(frame, dict) and frame.get(INSERTED_REFERENCE_KEY)]
        if len(marked) > 1:
            raise ValueError(f"poses: frames {marked} are all marked as the inserted reference; expected one")
        index = marked[0] if marked else None
    if index is None:
        raise ValueError(
            "poses: no inserted reference pose found; pass the sequence returned by insert_reference_pose "
            f"(its POSE_KEYPOINT marks the frame with '{INSERTED_REFERENCE_KEY}')"
        )
    return index


def remove_inserted_reference(batch, poses: PoseSequence | list[dict]):
    """Drop the inserted reference frame from ``batch`` (frames, latents, images, or the PoseSequence
    itself): any tensor/array whose first axis is the M+1 frames, returning M frames."""
    index = inserted_reference_index(poses)
    if len(batch) != len(poses):
        raise ValueError(
            f"batch: has {len(batch)} frames but the poses have {len(poses)} (M+1 with the inserted reference); "
            "pass the batch generated from these poses"
        )
    keep = [f for f in range(len(batch)) if f != index]
    if isinstance(batch, PoseSequence):
        return PoseSequence(batch.points[keep], batch.scores[keep], batch.canvas_width, batch.canvas_height)
    if isinstance(batch, torch.Tensor):
        return batch[torch.tensor(keep, dtype=torch.long, device=batch.device)]
    return np.asarray(batch)[keep]
