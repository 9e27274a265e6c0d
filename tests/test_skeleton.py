"""Skeleton renderer: the exact colours, sizes and skip rules of spec 7.2 / 7.4."""
import numpy as np
import pytest
import torch

from posecrafter.pose import BODY, FACE, LEFT_HAND, NUM_POINTS, RIGHT_HAND, PoseSequence
from posecrafter.skeleton import SkeletonVideo, render_skeleton, render_skeleton_images, render_skeletons

# Spec 7.2 table, written out independently of the renderer's constants.
JOINT_COLORS = {
    0: (255, 0, 0), 1: (255, 85, 0), 2: (255, 170, 0), 3: (255, 255, 0), 4: (170, 255, 0), 5: (85, 255, 0),
    6: (0, 255, 0), 7: (0, 255, 85), 8: (0, 255, 170), 10: (0, 170, 255), 11: (0, 85, 255), 12: (0, 0, 255),
    13: (85, 0, 255), 14: (170, 0, 255), 15: (255, 0, 255), 16: (255, 0, 170), 17: (255, 0, 85),
}
# limb index -> (joint a, joint b, dimmed colour); limbs 7 and 8 touch the missing R knee (9)
DRAWN_LIMBS = {
    0: (1, 2, (153, 0, 0)), 1: (1, 5, (153, 51, 0)), 2: (2, 3, (153, 102, 0)), 3: (3, 4, (153, 153, 0)),
    4: (5, 6, (102, 153, 0)), 5: (6, 7, (51, 153, 0)), 6: (1, 8, (0, 153, 0)), 9: (1, 11, (0, 153, 153)),
    10: (11, 12, (0, 102, 153)), 11: (12, 13, (0, 51, 153)), 12: (1, 0, (0, 0, 153)), 13: (0, 14, (51, 0, 153)),
    14: (14, 16, (102, 0, 153)), 15: (0, 15, (153, 0, 153)), 16: (15, 17, (153, 0, 102)),
}
HAND_EDGE_COLORS = [
    (255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0), (51, 255, 0),
    (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255), (0, 102, 255), (0, 25, 255),
    (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230), (255, 0, 153), (255, 0, 77),
]
BODY_POINTS = [
    (128, 40), (128, 70), (98, 70), (78, 110), (68, 150), (158, 70), (178, 110), (188, 150), (108, 150),
    (104, 192), (100, 235), (148, 150), (152, 195), (156, 235), (120, 34), (136, 34), (112, 38), (144, 38),
]
CANVAS = 256
OUT = 512  # rendered at twice the canvas size: every coordinate doubles


def hand_points(wrist_x):
    points = [(wrist_x, 180)]
    for finger in range(5):
        points += [(wrist_x + (finger - 2) * 10, 180 + j * 10) for j in range(1, 5)]
    return points


def synthetic_pose():
    points = np.zeros((1, NUM_POINTS, 2))
    scores = np.ones((1, NUM_POINTS))
    points[0, BODY] = BODY_POINTS
    scores[0, 9] = 0.0  # R knee missing
    scores[0, 18:24] = 0.0  # feet are never drawn anyway
    points[0, FACE] = [(10 + 5 * (j % 17), 10 + 5 * (j // 17)) for j in range(68)]
    points[0, LEFT_HAND] = hand_points(200)
    points[0, RIGHT_HAND] = hand_points(50)
    return PoseSequence(points, scores, CANVAS, CANVAS)


def at(image, x, y):
    return tuple(int(c) for c in image[int(y), int(x)])


@pytest.fixture(scope="module")
def image():
    return render_skeleton(synthetic_pose(), 0, OUT, OUT)


def test_joint_centres_have_the_full_joint_colour(image):
    for joint, color in JOINT_COLORS.items():
        x, y = BODY_POINTS[joint]
        assert at(image, 2 * x, 2 * y) == color, f"joint {joint}"


def test_limb_midpoints_have_the_dimmed_limb_colour(image):
    for limb, (a, b, color) in DRAWN_LIMBS.items():
        (xa, ya), (xb, yb) = BODY_POINTS[a], BODY_POINTS[b]
        assert at(image, xa + xb, ya + yb) == color, f"limb {limb}"


def test_limbs_run_along_the_segment_not_mirrored(image):
    for limb in (2, 3, 4, 5, 10, 11):  # arms and left leg: no other limb nearby
        a, b, color = DRAWN_LIMBS[limb]
        (xa, ya), (xb, yb) = BODY_POINTS[a], BODY_POINTS[b]
        for t in (0.25, 0.75):
            assert at(image, 2 * (xa + t * (xb - xa)), 2 * (ya + t * (yb - ya))) == color, f"limb {limb} at {t}"


def test_missing_point_draws_no_joint_and_no_limb(image):
    x, y = BODY_POINTS[9]
    assert at(image, 2 * x, 2 * y) == (0, 0, 0)
    for a in (8, 10):  # midpoints of R hip-R knee and R knee-R ankle
        xa, ya = BODY_POINTS[a]
        assert at(image, xa + x, ya + y) == (0, 0, 0)


def test_hand_edges_and_blue_hand_joints(image):
    for wrist_x in (200, 50):
        points = hand_points(wrist_x)
        for x, y in points:
            assert at(image, 2 * x, 2 * y) == (0, 0, 255)
        edges = [(0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4)]
        for e, (a, b) in enumerate(edges):
            (xa, ya), (xb, yb) = points[a], points[b]
            assert at(image, xa + xb, ya + yb) == HAND_EDGE_COLORS[e], f"hand edge {e}"


def test_face_dots_are_white_with_radius_3(image):
    for j in range(68):
        x, y = 2 * (10 + 5 * (j % 17)), 2 * (10 + 5 * (j // 17))
        assert at(image, x, y) == (255, 255, 255)
    x, y = 2 * 10, 2 * 10  # first face dot: radius 3 exactly
    assert at(image, x + 3, y) == (255, 255, 255) and at(image, x + 4, y) == (0, 0, 0)


def test_isolated_joint_radius_is_4(image):
    x, y = 2 * BODY_POINTS[10][0], 2 * BODY_POINTS[10][1]  # R ankle: its only limb goes to the missing knee
    assert at(image, x + 4, y) == JOINT_COLORS[10] and at(image, x + 5, y) == (0, 0, 0)


def test_stick_width_is_4():
    points = np.zeros((1, NUM_POINTS, 2))
    scores = np.zeros((1, NUM_POINTS))
    points[0, [1, 2]] = [(100, 100), (160, 100)]  # neck - R shoulder, horizontal
    scores[0, [1, 2]] = 1.0
    image = render_skeleton(PoseSequence(points, scores, 200, 200), 0, 200, 200)
    assert at(image, 130, 104) == (153, 0, 0) and at(image, 130, 105) == (0, 0, 0)
    assert at(image, 130, 96) == (153, 0, 0) and at(image, 130, 95) == (0, 0, 0)


def test_sentinel_points_at_pixel_zero_are_not_drawn():
    points = np.zeros((1, NUM_POINTS, 2))
    scores = np.zeros((1, NUM_POINTS))
    points[0, FACE.start] = (0.9, 50)  # int(x) == 0 -> not drawn
    points[0, LEFT_HAND.start : LEFT_HAND.start + 2] = [(50, 0.5), (50, 60)]  # wrist at y 0 -> no dot, no edge
    scores[0, [FACE.start, LEFT_HAND.start, LEFT_HAND.start + 1]] = 1.0
    image = render_skeleton(PoseSequence(points, scores, 100, 100), 0, 100, 100)
    assert at(image, 50, 60) == (0, 0, 255)  # the other hand point is drawn
    assert image[:40].sum() == 0 and image[:, :10].sum() == 0


def test_nobody_renders_black():
    empty = PoseSequence(np.zeros((1, NUM_POINTS, 2)), np.zeros((1, NUM_POINTS)), 64, 64)
    assert render_skeleton(empty, 0, 64, 32).shape == (32, 64, 3)
    assert render_skeleton(empty, 0, 64, 32).sum() == 0


def test_tensor_layouts_for_the_controlnet_and_comfyui():
    poses = synthetic_pose()
    two = PoseSequence(np.concatenate([poses.points] * 2), np.concatenate([poses.scores] * 2), CANVAS, CANVAS)
    images = render_skeleton_images(two, 96, 64)
    hint = render_skeletons(two, 96, 64)
    assert images.shape == (2, 64, 96, 3) and hint.shape == (2, 3, 64, 96)
    assert images.dtype == torch.float32 and hint.dtype == torch.float32
    expected = torch.from_numpy(render_skeleton(poses, 0, 96, 64)).float() / 255
    torch.testing.assert_close(images[1], expected, rtol=0, atol=0)
    torch.testing.assert_close(hint[0], expected.permute(2, 0, 1), rtol=0, atol=0)


def test_a_skeleton_video_draws_exactly_the_frames_asked_for():
    poses = synthetic_pose()
    moved = poses.points + np.array([[[0.0, 0.0]], [[7.0, 3.0]], [[-5.0, 9.0]]])
    three = PoseSequence(moved, np.concatenate([poses.scores] * 3), CANVAS, CANVAS)
    video = SkeletonVideo(three, 96, 64)
    assert video.shape == (3, 3, 64, 96) and video.ndim == 4 and len(video) == 3
    hint = render_skeletons(three, 96, 64)
    assert torch.equal(video[[2, 0]], hint[[2, 0]]) and torch.equal(video[1:], hint[1:])
    assert not torch.equal(hint[0], hint[1])
