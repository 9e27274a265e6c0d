"""Scores of a generated video against the world's ground truth: the render of the target poses.

- ``pose`` (0..1, higher is better): per part group (torso, arms, legs, head, hands, face features), the share of
  the pixels the ground truth gives that part whose generated colour is within ``COLOUR_TOLERANCE`` of one of the
  part's colours; the mean over the groups (each group is also reported, as ``pose_<group>``).
- ``identity`` (RGB distance 0..441, lower is better): per part group, the distance between the mean generated
  colour and the mean ground-truth colour over that part's pixels (all frames pooled); the mean over the groups
  (each group is also reported, as ``identity_<group>``).
- ``background`` (PSNR, dB): the generated background against the room, over the pixels at least
  ``BACKGROUND_MARGIN`` px away from the person; capped at ``PSNR_CAP`` (the renders themselves score the cap).
- ``flicker``: mean absolute frame-to-frame change of the generated video over the ground truth's (1 is the
  ground truth's own motion; higher is flicker).
"""
from __future__ import annotations

import cv2
import numpy as np

from posecrafter.pose import PoseSequence

from .people import LABELS, PART_GROUPS, Identity, render

COLOUR_TOLERANCE = 60.0  # RGB Euclidean distance (0..255 per channel)
BACKGROUND_MARGIN = 4
PSNR_CAP = 60.0


def _check_frames(frames: np.ndarray, target_poses: PoseSequence) -> np.ndarray:
    frames = np.asarray(frames)
    expected = (len(target_poses), target_poses.canvas_height, target_poses.canvas_width, 3)
    if frames.shape != expected or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 {list(expected)} (one frame per target pose, on its canvas), "
                         f"got {frames.dtype} {list(frames.shape)}")
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10 * np.log10(255.0 ** 2 / mse))


def flicker(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean |frame t+1 - frame t| of ``frames`` over that of ``reference``."""
    change = lambda video: np.abs(np.diff(video.astype(np.float64), axis=0)).mean()  # noqa: E731
    return float(change(frames) / max(change(reference), 1e-9))


def score(frames: np.ndarray, target_poses: PoseSequence, identity: Identity, background: np.ndarray) -> dict:
    """Score uint8 frames [F, H, W, 3] generated for ``target_poses`` of the person ``identity`` in the room
    ``background`` (see the module docstring)."""
    frames = _check_frames(frames, target_poses)
    truth, labels = render(target_poses, identity, background, with_labels=True)
    generated = frames.astype(np.float64)
    colours = identity.part_colours()
    result, shares, errors = {}, [], []
    for group, parts in PART_GROUPS.items():
        mask = np.isin(labels, [LABELS.index(part) for part in parts])
        if not mask.any():
            continue
        palette = np.array([colour for part in parts for colour in colours[part]], dtype=np.float64)
        distance = np.linalg.norm(generated[mask][:, None, :] - palette[None], axis=-1).min(axis=1)
        share = float((distance < COLOUR_TOLERANCE).mean())
        error = float(np.linalg.norm(generated[mask].mean(axis=0) - truth[mask].astype(np.float64).mean(axis=0)))
        result[f"pose_{group}"], result[f"identity_{group}"] = share, error
        shares.append(share)
        errors.append(error)
    person = (labels > 0).astype(np.uint8)
    kernel = np.ones((2 * BACKGROUND_MARGIN + 1,) * 2, np.uint8)
    far = np.stack([cv2.dilate(m, kernel) == 0 for m in person])
    result.update(pose=float(np.mean(shares)), identity=float(np.mean(errors)),
                  background=psnr(frames[far], np.broadcast_to(background, frames.shape)[far]),
                  flicker=flicker(frames, truth))
    return result
