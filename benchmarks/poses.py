"""Synthetic whole-body pose sequences for tests and benchmarks: a dancing person and DWPose-like detection noise.

``dancing_person`` animates a whole-body skeleton (OpenPose-18 body, 6 foot, 68 face and 2 x 21 hand points, the
layout of ``posecrafter.pose``) by joint angles that follow sums of sines with seeded, incommensurate
frequencies, so no two frames of a clip repeat. ``dwpose_noise`` adds what DWPose does to such a clip (see its
docstring for the numbers).
"""
from __future__ import annotations

import numpy as np

from posecrafter.pose import BODY, FACE, FEET, LEFT_HAND, NUM_POINTS, RIGHT_HAND, PoseSequence

# Bone lengths and offsets of a standing person, in units of the torso (neck to mid-hip).
_SHOULDER, _HIP, _UPPER_ARM, _FOREARM, _THIGH, _SHIN, _HEAD = 0.45, 0.2, 0.55, 0.5, 0.8, 0.75, 0.3
_FINGER_ANGLES = np.radians([-40, -15, 0, 15, 30])  # thumb .. little finger, about the forearm direction
_FINGER_LENGTHS = (0.05, 0.07, 0.075, 0.07, 0.055)  # per phalanx, torso units


def _rotate(vectors: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return vectors @ np.array([[c, s], [-s, c]])


def _direction(angle: float) -> np.ndarray:
    """Unit vector at ``angle`` from straight down (image y grows downwards), positive towards +x."""
    return np.array([np.sin(angle), np.cos(angle)])


def _hand(wrist: np.ndarray, angle: float, spread: float) -> np.ndarray:
    """21 hand points: the wrist, then 4 joints per finger, fanned about ``angle``."""
    points = [wrist]
    for finger_angle, length in zip(_FINGER_ANGLES, _FINGER_LENGTHS):
        direction = _direction(angle + finger_angle * spread)
        points += [wrist + direction * length * (1.5 + joint) for joint in range(4)]
    return np.array(points)


def _face(nose: np.ndarray, tilt: float) -> np.ndarray:
    """68 face points (jaw 17, brows 10, nose 9, eyes 12, mouth 20) about the nose, tilted by ``tilt``."""
    jaw = np.stack([np.linspace(-1, 1, 17), 0.2 + 0.8 * (1 - np.linspace(-1, 1, 17) ** 2) ** 0.5], axis=1)
    jaw = jaw * [0.13, 0.16] + [0, -0.05]
    brows = np.stack([np.r_[np.linspace(-0.11, -0.02, 5), np.linspace(0.02, 0.11, 5)], np.full(10, -0.09)], axis=1)
    nose_points = np.stack([np.r_[np.zeros(4), np.linspace(-0.03, 0.03, 5)], np.r_[np.linspace(-0.06, 0, 4), np.full(5, 0.02)]], axis=1)
    eye = np.stack([np.cos(np.linspace(0, 2 * np.pi, 7)[:-1]) * 0.025, np.sin(np.linspace(0, 2 * np.pi, 7)[:-1]) * 0.01], axis=1)
    eyes = np.r_[eye + [-0.06, -0.06], eye + [0.06, -0.06]]
    mouth = np.stack([np.cos(np.linspace(0, 2 * np.pi, 21)[:-1]) * 0.05, np.sin(np.linspace(0, 2 * np.pi, 21)[:-1]) * 0.02], axis=1)
    mouth = mouth + [0, 0.07]
    return nose + _rotate(np.r_[jaw, brows, nose_points, eyes, mouth], tilt)


def dancing_person(frames: int, seed: int = 0, canvas: int = 512, fps: float = 30.0) -> PoseSequence:
    """A person dancing for ``frames`` frames at ``fps``, whole body in view on a ``canvas`` px square canvas,
    every point visible (score 1). The seed sets the frequencies, phases and amplitudes of the motion."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps

    def motion(amplitude: float) -> np.ndarray:
        """A sum of two sines (0.3-1.5 Hz), ``amplitude`` radians (or torso units) at most."""
        freq, phase, mix = rng.uniform(0.3, 1.5, 2), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.3, 0.7)
        return amplitude * (mix * np.sin(2 * np.pi * freq[0] * t + phase[0]) + (1 - mix) * np.sin(2 * np.pi * freq[1] * t + phase[1]))

    torso = canvas * 0.22
    sway, bob, lean, head = motion(0.25), motion(0.05), motion(0.15), motion(0.3)
    arms = {side: (motion(1.2), motion(0.9), motion(0.5)) for side in (-1, 1)}  # upper arm, elbow, wrist
    legs = {side: (motion(0.35), motion(0.4)) for side in (-1, 1)}  # thigh, knee
    points = np.zeros((frames, NUM_POINTS, 2))
    for f in range(frames):
        hip_centre = np.array([0.5 + 0.1 * sway[f], 0.62 + 0.02 * bob[f]])
        # torso units about the hip centre, scaled onto the canvas at the end
        up = -_direction(lean[f])
        body, feet, hands = np.zeros((18, 2)), np.zeros((6, 2)), {}
        neck = up
        across = _rotate(np.array([[1.0, 0.0]]), lean[f])[0]  # the person's left (image +x for a front view)
        nose = neck + _rotate(up[None] * _HEAD, head[f])[0]
        body[1], body[0] = neck, nose
        for side, shoulder_i, elbow_i, wrist_i, hip_i, knee_i, ankle_i in ((-1, 2, 3, 4, 8, 9, 10), (1, 5, 6, 7, 11, 12, 13)):
            upper, elbow, wrist_bend = arms[side]
            shoulder = neck + side * across * _SHOULDER
            upper_angle = lean[f] + side * (0.4 + upper[f])
            elbow_point = shoulder + _direction(upper_angle) * _UPPER_ARM
            fore_angle = upper_angle + side * (0.3 + elbow[f])
            wrist = elbow_point + _direction(fore_angle) * _FOREARM
            body[shoulder_i], body[elbow_i], body[wrist_i] = shoulder, elbow_point, wrist
            hands[side] = _hand(wrist, fore_angle + wrist_bend[f], spread=side)
            thigh, knee = legs[side]
            hip = side * across * _HIP
            thigh_angle = side * (0.08 + thigh[f])
            knee_point = hip + _direction(thigh_angle) * _THIGH
            ankle = knee_point + _direction(thigh_angle - side * abs(knee[f])) * _SHIN
            body[hip_i], body[knee_i], body[ankle_i] = hip, knee_point, ankle
            # DWPose foot order: left big toe, small toe, heel, then the right foot's
            foot = slice(0, 3) if side == 1 else slice(3, 6)
            feet[foot] = ankle + np.array([[side * 0.12, 0.1], [side * 0.2, 0.08], [-side * 0.03, 0.07]])
        eye_offset = _rotate(np.array([[0.06, -0.06]]), head[f])[0]
        ear_offset = _rotate(np.array([[0.13, -0.03]]), head[f])[0]
        mirror = np.array([-1, 1])
        body[14], body[15] = nose + eye_offset * mirror, nose + eye_offset
        body[16], body[17] = nose + ear_offset * mirror, nose + ear_offset
        frame = np.zeros((NUM_POINTS, 2))
        frame[BODY], frame[FEET], frame[FACE] = body, feet, _face(nose, head[f])
        frame[RIGHT_HAND], frame[LEFT_HAND] = hands[-1], hands[1]
        points[f] = (hip_centre * canvas) + frame * torso
    return PoseSequence(points, np.ones((frames, NUM_POINTS)), canvas, canvas)


def dwpose_noise(poses: PoseSequence, seed: int) -> PoseSequence:
    """``poses`` as DWPose detects them, on a 512 px scale (scaled with the canvas):

    - jitter: independent Gaussian noise per point and frame, sigma 3 px for body and feet, 2 px for the face,
      4 px for the hands (hand points are DWPose's least stable);
    - flicker: a fixed 15% of the face and hand points and 2 body points (ears) are marginal, each missing in
      a frame with probability 0.5; every other point is missing with probability 0.03; a whole hand is
      missing in 10% of the frames (motion blur);
    - misdetections: 1% of the visible points are off by 30-60 px in a random direction.
    Missing points get score 0, as in POSE_KEYPOINT.
    """
    rng = np.random.default_rng(seed)
    frames = len(poses)
    scale = poses.canvas_width / 512
    sigma = np.full(NUM_POINTS, 3.0)
    sigma[FACE], sigma[LEFT_HAND], sigma[RIGHT_HAND] = 2.0, 4.0, 4.0
    points = poses.points + rng.normal(size=poses.points.shape) * sigma[None, :, None] * scale
    marginal = np.zeros(NUM_POINTS, dtype=bool)
    for part in (FACE, LEFT_HAND, RIGHT_HAND):
        indices = np.arange(part.start, part.stop)
        marginal[rng.choice(indices, size=round(0.15 * len(indices)), replace=False)] = True
    marginal[[16, 17]] = True
    missing = rng.random((frames, NUM_POINTS)) < np.where(marginal, 0.5, 0.03)
    for hand in (LEFT_HAND, RIGHT_HAND):
        missing[rng.random(frames) < 0.1, hand] = True
    wrong = rng.random((frames, NUM_POINTS)) < 0.01
    angle = rng.uniform(0, 2 * np.pi, wrong.sum())
    points[wrong] += np.stack([np.cos(angle), np.sin(angle)], axis=1) * rng.uniform(30, 60, (len(angle), 1)) * scale
    scores = np.where(missing, 0.0, poses.scores)
    points[missing] = 0.0
    return PoseSequence(points, scores, poses.canvas_width, poses.canvas_height)
