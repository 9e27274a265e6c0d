"""Affine face/hand latent editing (spec 5.4, 9 #10-13)."""
import numpy as np
import pytest
import torch

from posecrafter.latent_edit import (
    alpha_edit_hook,
    apply_latent_edits,
    edit_initial_latents,
    fit_affine,
    plan_latent_edits,
    to_latent_coordinates,
)
from posecrafter.pose import FACE as FACE_POINTS
from posecrafter.pose import LEFT_HAND as LEFT_HAND_POINTS
from posecrafter.pose import NUM_POINTS, PoseSequence
from posecrafter.pose import RIGHT_HAND as RIGHT_HAND_POINTS
from posecrafter.reference import insert_reference_pose

CANVAS = 256  # pose canvas (pixels); with a 16x16 latent the latent's pixel size is 128: scale 0.5
LATENT = 16


def face_points(centre=(100.0, 100.0), radius=(24.0, 32.0)):
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([centre[0] + radius[0] * np.cos(angles), centre[1] + radius[1] * np.sin(angles)], axis=1)


def hand_points(origin):
    return np.array(origin) + np.stack([np.arange(21) % 5 * 6.0, np.arange(21) // 5 * 8.0], axis=1)


FACE, LEFT_HAND, RIGHT_HAND = "face", "left hand", "right hand"
PART_SLICES = {FACE: FACE_POINTS, LEFT_HAND: LEFT_HAND_POINTS, RIGHT_HAND: RIGHT_HAND_POINTS}


def sequence(frames):
    """frames: list of {part name: [n, 2] canvas points}; the first n points of the part, others missing."""
    points = np.zeros((len(frames), NUM_POINTS, 2))
    scores = np.zeros((len(frames), NUM_POINTS))
    for f, parts in enumerate(frames):
        for part, xy in parts.items():
            start = PART_SLICES[part].start
            points[f, start : start + len(xy)], scores[f, start : start + len(xy)] = xy, 1.0
    return PoseSequence(points, scores, CANVAS, CANVAS)


def extended(reference_parts, target_frames, k=0):
    return insert_reference_pose(sequence(target_frames), sequence([reference_parts]), k=k)


def test_known_affine_is_recovered_from_noisy_points():
    rng = np.random.default_rng(0)
    true = np.array([[1.1, 0.2, 3.0], [-0.15, 0.9, -2.0]])
    source = rng.uniform(10, 30, (30, 2))
    target = source @ true[:, :2].T + true[:, 2]
    exact, _ = fit_affine(source[:3], target[:3])
    np.testing.assert_allclose(exact, true, atol=1e-9)  # 3 points determine it exactly
    noisy, _ = fit_affine(source, target + rng.normal(0, 0.05, target.shape))
    # bound for 30 points spread over 20 latent px with 0.05 px noise: linear part within 0.01,
    # mapped landmarks within 0.05 latent px of the true map
    assert np.abs(noisy[:, :2] - true[:, :2]).max() < 0.01
    mapped_error = (source @ (noisy[:, :2] - true[:, :2]).T + noisy[:, 2] - true[:, 2])
    assert np.abs(mapped_error).max() < 0.05


def test_degenerate_fits_are_rejected_with_a_reason():
    collinear = np.stack([np.arange(5.0), 2 * np.arange(5.0)], axis=1)
    assert fit_affine(collinear, collinear + 1)[1].startswith("rank-deficient")
    square = np.array([[0, 0], [4, 0], [0, 4], [4, 4]], float)
    assert "outside [0.25, 4.0]" in fit_affine(square, square * 3)[1]  # |det| = 9
    assert fit_affine(square, square * 1.9)[1] is None  # |det| = 3.61 is allowed


def test_latent_coordinates_use_pixel_centres():
    np.testing.assert_allclose(to_latent_coordinates(np.array([0.0, 3.5, 11.5])), [-0.4375, 0.0, 1.0])


def test_identity_warp_leaves_the_latent_unchanged():
    plan = plan_latent_edits(extended({FACE: face_points()}, [{FACE: face_points()}]), LATENT, LATENT)
    np.testing.assert_allclose(plan.frames[1][0].affine, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    reference = torch.randn(4, LATENT, LATENT)
    torch.testing.assert_close(edit_initial_latents(reference, plan)[1], reference, rtol=0, atol=0)


def test_pasting_changes_only_the_target_box_with_the_warped_reference():
    shift = 16.0  # canvas px -> 8 latent-pixel-size px -> 1 latent px
    poses = extended({FACE: face_points()}, [{FACE: face_points() + [shift, 0]}])
    plan = plan_latent_edits(poses, LATENT, LATENT)
    edit = plan.frames[1][0]
    np.testing.assert_allclose(edit.affine, [[1, 0, 1], [0, 1, 0]], atol=1e-9)
    # target face: x 92..140, y 68..132 canvas px = x 46..70, y 34..66 at the latent's pixel size (x0.5)
    # -> u = (x + 0.5) / 8 - 0.5: x 5.31..8.31, y 3.81..7.81 -> floor/ceil
    assert edit.box == (5, 3, 9, 8)
    reference = torch.randn(4, LATENT, LATENT)
    latents = torch.zeros(2, 4, LATENT, LATENT)
    edited = apply_latent_edits(reference, latents, plan)
    assert latents.abs().sum() == 0  # never in place
    x0, y0, x1, y1 = edit.box
    inside = torch.zeros(LATENT, LATENT, dtype=torch.bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    assert edited[1][:, ~inside].abs().sum() == 0
    torch.testing.assert_close(edited[1][:, inside], reference[:, y0 : y1 + 1, x0 - 1 : x1].reshape(4, -1))
    assert edited[0].abs().sum() == 0  # the reference frame k is never edited


def test_warp_replicates_the_border():
    reference_face = face_points(centre=(30.0, 100.0))
    poses = extended({FACE: reference_face}, [{FACE: reference_face + [32.0, 0]}])  # 2 latent px right
    edit = plan_latent_edits(poses, LATENT, LATENT).frames[1][0]
    x0, y0, x1, y1 = edit.box
    assert x0 == 1
    reference = torch.randn(4, LATENT, LATENT)
    edited = edit_initial_latents(reference, plan_latent_edits(poses, LATENT, LATENT))[1]
    # latent column 1 samples reference column -1, outside the latent: the border column 0 is repeated
    torch.testing.assert_close(edited[:, y0 : y1 + 1, 1], reference[:, y0 : y1 + 1, 0])
    torch.testing.assert_close(edited[:, y0 : y1 + 1, 2], reference[:, y0 : y1 + 1, 0])


def test_later_parts_overwrite_earlier_ones_and_all_warp_the_unedited_reference():
    target_face = face_points() + [16.0, 0]  # 1 latent px right
    target_hand = hand_points((96, 90)) + [32.0, 0]  # 2 latent px right, overlapping the face box
    poses = extended({FACE: face_points(), LEFT_HAND: hand_points((96, 90))},
                     [{FACE: target_face, LEFT_HAND: target_hand}])
    plan = plan_latent_edits(poses, LATENT, LATENT)
    face, hand, right = plan.frames[1]
    assert right.skip_reason == "0 common visible landmarks, need at least 6"
    reference = torch.randn(4, LATENT, LATENT)
    edited = edit_initial_latents(reference, plan)[1]
    x0, y0, x1, y1 = hand.box
    torch.testing.assert_close(edited[:, y0 : y1 + 1, x0 : x1 + 1], reference[:, y0 : y1 + 1, x0 - 2 : x1 - 1])
    fx0, fy0, fx1, fy1 = face.box
    assert fx0 < x0 and fy0 < y0  # part of the face box outside the hand box keeps the face warp
    torch.testing.assert_close(edited[:, fy0, fx0], reference[:, fy0, fx0 - 1])


def test_too_few_common_points_skip_with_the_reason():
    reference_hand = hand_points((60, 60))
    target_frame = {FACE: face_points()[:2], LEFT_HAND: hand_points((60, 60))[:5], RIGHT_HAND: hand_points((150, 60))}
    poses = extended({FACE: face_points(), LEFT_HAND: reference_hand}, [target_frame])
    face, left, right = plan_latent_edits(poses, LATENT, LATENT).frames[1]
    assert face.skip_reason == "2 common visible landmarks, need at least 3" and face.affine is None
    assert left.skip_reason == "5 common visible landmarks, need at least 6"
    assert right.skip_reason == "0 common visible landmarks, need at least 6"
    reference = torch.randn(4, LATENT, LATENT)
    torch.testing.assert_close(edit_initial_latents(reference, plan_latent_edits(poses, LATENT, LATENT))[1], reference)


def test_degenerate_target_is_skipped_and_reported():
    squashed = face_points()
    squashed[:, 1] = 100.0  # all target face points on one line
    poses = extended({FACE: face_points()}, [{FACE: squashed}, {FACE: face_points() * 3 - 150}])
    plan = plan_latent_edits(poses, LATENT, LATENT)
    assert "outside [0.25, 4.0]" in plan.frames[1][0].skip_reason  # |det| ~ 0
    assert "outside [0.25, 4.0]" in plan.frames[2][0].skip_reason  # |det| = 9
    report = plan.report()
    assert report[0] == "frame 0: inserted reference, not edited"
    assert report[1].startswith("frame 1: face skipped: |det|")


def test_position_k_is_never_edited():
    target = {FACE: face_points() + [16.0, 8.0]}
    poses = extended({FACE: face_points()}, [target, target, target], k=2)
    plan = plan_latent_edits(poses, LATENT, LATENT)
    assert plan.frames[2] == () and plan.frames[0][0].affine is not None
    reference = torch.randn(4, LATENT, LATENT)
    latents = torch.randn(4, 4, LATENT, LATENT)
    edited = apply_latent_edits(reference[None], latents, plan)
    assert torch.equal(edited[2], latents[2])
    assert not torch.equal(edited[0], latents[0])


def test_latent_size_must_match_the_pose_canvas_aspect():
    poses = extended({FACE: face_points()}, [{FACE: face_points()}])
    with pytest.raises(ValueError, match="the 16x12 reference latent .* aspect ratio"):
        plan_latent_edits(poses, 12, 16)
    plan = plan_latent_edits(poses, LATENT, LATENT)
    with pytest.raises(ValueError, match=r"latents: expected \[2, C, 16, 16\]"):
        apply_latent_edits(torch.zeros(4, LATENT, LATENT), torch.zeros(3, 4, LATENT, LATENT), plan)
    with pytest.raises(ValueError, match="reference_latent"):
        apply_latent_edits(torch.zeros(4, 8, 8), torch.zeros(2, 4, LATENT, LATENT), plan)


def test_plan_needs_an_inserted_reference():
    with pytest.raises(ValueError, match="poses: no inserted reference"):
        plan_latent_edits(sequence([{FACE: face_points()}]), LATENT, LATENT)


def test_alpha_hook_edits_once_from_the_inversion_latent_at_that_timestep():
    poses = extended({FACE: face_points()}, [{FACE: face_points() + [16.0, 0]}])
    plan = plan_latent_edits(poses, LATENT, LATENT)
    inversion = {981: torch.randn(4, LATENT, LATENT), 961: torch.randn(4, LATENT, LATENT)}
    asked = []

    def reference_latent_at(timestep):
        asked.append(timestep)
        return inversion[timestep]

    hook = alpha_edit_hook(plan, reference_latent_at, alpha=2)
    latents = torch.randn(2, 4, LATENT, LATENT)
    assert hook(0, 981, latents) is latents
    edited = hook(1, 961, latents)
    assert asked == [961]
    torch.testing.assert_close(edited, apply_latent_edits(inversion[961], latents, plan))
    assert not torch.equal(edited[1], latents[1]) and torch.equal(edited[0], latents[0])
    assert hook(2, 941, edited) is edited
    with pytest.raises(ValueError, match="alpha"):
        alpha_edit_hook(plan, reference_latent_at, alpha=1)


def test_boxes_are_clipped_to_a_landscape_latent_on_every_side():
    """A face reaching past the left and top edges keeps the part inside (x0 = y0 = 0), and one past the right
    edge is clipped by the latent's width, not its height (a 16x8 latent for a 512x256 canvas)."""
    def landscape(frames):
        poses = sequence(frames)
        return PoseSequence(poses.points, poses.scores, 512, 256)

    reference = {FACE: face_points(centre=(200.0, 120.0), radius=(40.0, 40.0))}
    past_top_left = {FACE: face_points(centre=(10.0, 10.0), radius=(40.0, 40.0))}
    past_right = {FACE: face_points(centre=(500.0, 120.0), radius=(40.0, 40.0))}
    poses = insert_reference_pose(landscape([past_top_left, past_right]), landscape([reference]), k=0)
    plan = plan_latent_edits(poses, 8, 16)
    assert plan.frames[1][0].box == (0, 0, 2, 2)
    assert plan.frames[2][0].box == (13, 2, 15, 5)
