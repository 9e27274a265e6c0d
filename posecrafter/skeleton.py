"""OpenPose skeleton images, pixel for pixel what ControlNet v1.1 OpenPose was trained on (spec 7.2, 7.4).

Black RGB canvas; body limbs (dimmed ellipses), body joints, hands (HSV edges, blue joints),
then the 68 face landmarks as white dots. Drawn directly at the requested size, with the pose's
coordinates scaled from its canvas.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from .pose import BODY, FACE, LEFT_HAND, RIGHT_HAND, PoseSequence

STICK_WIDTH = 4
JOINT_RADIUS = 4
HAND_EDGE_THICKNESS = 2
HAND_JOINT_RADIUS = 4
FACE_DOT_RADIUS = 3
LIMB_DIMMING = 0.6

# Colour i is used by body joint i and by limb i (spec 7.2 table), RGB.
BODY_COLORS = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]
# The 17 drawn limbs as pairs of OpenPose body indices; the first joint sets the angle's sign (spec 7.4).
LIMBS = [
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
]
# Wrist (0) to each finger tip: thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20.
HAND_EDGES = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
]
# The integer colours actually drawn for hand edges 0..19 (spec 7.4 table), RGB.
HAND_EDGE_COLORS = [
    (255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0), (51, 255, 0),
    (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255), (0, 102, 255), (0, 25, 255),
    (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230), (255, 0, 153), (255, 0, 77),
]
HAND_JOINT_COLOR = (0, 0, 255)
FACE_DOT_COLOR = (255, 255, 255)


def render_skeleton(poses: PoseSequence, index: int, width: int, height: int) -> np.ndarray:
    """Draw pose ``index`` of ``poses`` on a black [height, width, 3] uint8 RGB canvas (spec 7.2, 7.4)."""
    if width < 1 or height < 1:
        raise ValueError(f"width/height: the skeleton image size must be positive, got {width}x{height}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    scale = np.array([width / poses.canvas_width, height / poses.canvas_height])
    points = poses.points[index] * scale
    visible = poses.visible[index]

    body, body_visible = points[BODY], visible[BODY]
    for (a, b), color in zip(LIMBS, BODY_COLORS):
        if body_visible[a] and body_visible[b]:
            _draw_limb(canvas, body[a], body[b], color)
    for joint, color in enumerate(BODY_COLORS):
        if body_visible[joint]:
            cv2.circle(canvas, _pixel(body[joint]), JOINT_RADIUS, color, thickness=-1)

    for hand in (LEFT_HAND, RIGHT_HAND):
        _draw_hand(canvas, points[hand], visible[hand])

    for point, is_visible in zip(points[FACE], visible[FACE]):
        if is_visible and _inside_sentinel(point):
            cv2.circle(canvas, _pixel(point), FACE_DOT_RADIUS, FACE_DOT_COLOR, thickness=-1)
    return canvas


def render_skeletons(poses: PoseSequence, width: int, height: int) -> torch.Tensor:
    """All poses as the ControlNet's hint input: float [F, 3, height, width] RGB in 0..1."""
    return SkeletonVideo(poses, width, height)[:]


def render_skeleton_images(poses: PoseSequence, width: int, height: int) -> torch.Tensor:
    """All poses as a ComfyUI IMAGE: float [F, height, width, 3] RGB in 0..1."""
    return torch.from_numpy(_draw(poses, range(len(poses)), width, height)).float() / 255.0


class SkeletonVideo:
    """The ControlNet's hint images of a whole pose sequence, drawn only when frames are asked for.

    Indexing with a frame index, a list of them or a slice returns what :func:`render_skeletons` would hold for
    those frames (float [n, 3, height, width], same values) on ``device``, so a sampler or tuner that takes one
    window or clip at a time keeps only the keypoints of a long video in memory, not 3 MB of image a frame at
    512 px. Frames are drawn on the CPU and converted to float on ``device`` (a quarter of the bytes to copy).
    ``shape`` and ``ndim`` are those of the full tensor.
    """

    ndim = 4

    def __init__(self, poses: PoseSequence, width: int, height: int, device: torch.device | str = "cpu"):
        if width < 1 or height < 1:
            raise ValueError(f"width/height: the skeleton image size must be positive, got {width}x{height}")
        self.poses, self.width, self.height, self.device = poses, width, height, torch.device(device)

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.poses), 3, self.height, self.width))

    def __getitem__(self, frames: int | list[int] | slice) -> torch.Tensor:
        if isinstance(frames, int):  # one frame [3, height, width], as a tensor's index gives
            return self[[frames]][0]
        indices = range(len(self.poses))[frames] if isinstance(frames, slice) else frames
        drawn = torch.from_numpy(_draw(self.poses, indices, self.width, self.height)).to(self.device)
        return drawn.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def _draw(poses: PoseSequence, indices, width: int, height: int) -> np.ndarray:
    """uint8 [n, height, width, 3] skeletons of the poses at ``indices``."""
    return np.stack([render_skeleton(poses, f, width, height) for f in indices])


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(point[0]), int(point[1])


def _inside_sentinel(point: np.ndarray) -> bool:
    """Hand and face points at pixel 0 or below are DWPose's 'missing' sentinels (spec 7.4)."""
    x, y = _pixel(point)
    return x >= 1 and y >= 1


def _draw_limb(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, color: tuple[int, int, int]) -> None:
    """A filled ellipse from joint a to joint b, stick width 4, colour dimmed by 0.6 (spec 7.4)."""
    center = (int((a[0] + b[0]) / 2), int((a[1] + b[1]) / 2))
    length = ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5
    angle = int(math.degrees(math.atan2(a[1] - b[1], a[0] - b[0])))
    polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), angle, 0, 360, 1)
    cv2.fillConvexPoly(canvas, polygon, [int(c * LIMB_DIMMING) for c in color])


def _draw_hand(canvas: np.ndarray, points: np.ndarray, visible: np.ndarray) -> None:
    drawable = [bool(v) and _inside_sentinel(p) for p, v in zip(points, visible)]
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
        if drawable[a] and drawable[b]:
            cv2.line(canvas, _pixel(points[a]), _pixel(points[b]), color, thickness=HAND_EDGE_THICKNESS)
    for point, is_drawable in zip(points, drawable):
        if is_drawable:
            cv2.circle(canvas, _pixel(point), HAND_JOINT_RADIUS, HAND_JOINT_COLOR, thickness=-1)
