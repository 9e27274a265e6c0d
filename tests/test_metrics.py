"""Evaluation metrics (posecrafter/metrics.py): MSE-P against closed forms, PSNR/SSIM against scikit-image,
CLIP-I/T against a direct computation on a tiny CLIP vision model."""
import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from posecrafter.metrics import POSE_PARTS, clip_consistency, pose_error, psnr, ssim
from posecrafter.pose import FACE, FEET, LEFT_HAND, NUM_POINTS, RIGHT_HAND, PoseSequence
from tests.tiny_models import tiny_clip_embedder


def random_poses(frames, width, height, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0.1, 0.9, (frames, NUM_POINTS, 2)) * [width, height]
    scores = np.ones((frames, NUM_POINTS))
    scores[:, FEET] = 0.0  # POSE_KEYPOINT carries no feet
    return PoseSequence(points, scores, width, height)


def shifted(poses, dx, dy):
    return PoseSequence(poses.points + [dx, dy], poses.scores, poses.canvas_width, poses.canvas_height)


def test_pose_error_is_zero_for_identical_poses_and_the_normalised_shift_otherwise():
    target = random_poses(3, 320, 240)
    error = pose_error(target, target)
    for part in POSE_PARTS:
        np.testing.assert_array_equal(error.per_frame[part], 0.0)
    dx, dy = 6.0, -4.0
    error = pose_error(shifted(target, dx, dy), target)
    expected = (dx / 320) ** 2 + (dy / 240) ** 2
    for part in POSE_PARTS:
        np.testing.assert_allclose(error.per_frame[part], expected, rtol=1e-9)
        assert error.mean(part) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_array_equal(error.points["all"], 18 + 68 + 42)
    np.testing.assert_array_equal(error.points["hands"], 42)


def test_each_pose_is_normalised_by_its_own_canvas():
    """Generated frames at twice the size of the target's canvas: the same relative pose has no error."""
    target = random_poses(2, 160, 120)
    generated = PoseSequence(target.points * 2, target.scores, 320, 240)
    np.testing.assert_allclose(pose_error(generated, target).per_frame["all"], 0.0, atol=1e-15)


def test_missing_parts_are_excluded_and_reported_not_zero():
    target = random_poses(4, 100, 100)
    generated = shifted(target, 1.0, 0.0)  # error 1e-4 everywhere it is measured
    gen_scores, target_scores = generated.scores.copy(), target.scores.copy()
    gen_scores[1, np.r_[LEFT_HAND, RIGHT_HAND]] = 0.0  # no hands found in generated frame 1
    target_scores[2, FACE] = 0.0  # the target has no face in frame 2
    gen_scores[3] = 0.0  # nobody found in generated frame 3
    gen_scores[0, 5] = 0.0
    points = generated.points.copy()
    points[0, 5] += 50.0  # an invisible point far off does not count
    target_scores[0, 6] = 0.0
    points[0, 6] += 50.0  # nor does one visible only in the generated pose
    generated = PoseSequence(points, gen_scores, 100, 100)
    target = PoseSequence(target.points, target_scores, 100, 100)

    error = pose_error(generated, target)
    assert error.missing_in_generated == {"all": [3], "body": [3], "face": [3], "hands": [1, 3]}
    assert error.missing_in_target == {"all": [], "body": [], "face": [2], "hands": []}
    np.testing.assert_allclose(error.per_frame["all"][:3], 1e-4, rtol=1e-9)
    assert np.isnan(error.per_frame["all"][3]) and error.points["all"][3] == 0
    assert np.isnan(error.per_frame["hands"][1]) and np.isnan(error.per_frame["face"][2])
    assert error.points["body"][0] == 16 and error.points["all"][1] == 18 + 68 and error.points["all"][2] == 18 + 42
    assert error.mean("hands") == pytest.approx(1e-4, rel=1e-9)  # over frames 0 and 2 only
    nobody = pose_error(PoseSequence(points, np.zeros_like(gen_scores), 100, 100), target)
    assert np.all(np.isnan(nobody.per_frame["all"])) and np.isnan(nobody.mean())


def test_pose_error_needs_poses_of_the_same_frames():
    with pytest.raises(ValueError, match="generated: 3 poses but target has 2"):
        pose_error(random_poses(3, 64, 64), random_poses(2, 64, 64))


def skimage_values(generated, ground_truth):
    """PSNR and SSIM per frame from scikit-image, on the float64 frames (the Wang et al. settings)."""
    values = []
    for g, t in zip(generated.double().numpy(), ground_truth.double().numpy()):
        values.append((
            peak_signal_noise_ratio(t, g, data_range=1.0),
            structural_similarity(g, t, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1.0),
        ))
    return np.array(values).T


def real_pairs():
    """Two real photos, each against a degraded copy: noise on the astronaut, a shift and JPEG-like banding on
    the cat."""
    rng = np.random.default_rng(0)
    astronaut = data.astronaut()[::2, ::2] / 255.0  # 256x256
    noisy = np.clip(astronaut + rng.normal(0, 0.08, astronaut.shape), 0, 1)
    cat = data.chelsea()[:256, :256] / 255.0
    changed = np.round(np.roll(cat, 3, axis=1) * 16) / 16
    generated = torch.tensor(np.stack([noisy, changed]), dtype=torch.float32)
    ground_truth = torch.tensor(np.stack([astronaut, cat]), dtype=torch.float32)
    return generated, ground_truth


@pytest.mark.parametrize("images", ["random", "real"])
def test_psnr_and_ssim_agree_with_scikit_image(images):
    if images == "random":
        generator = torch.Generator().manual_seed(0)
        ground_truth = torch.rand(10, 48, 64, 3, generator=generator)  # 10 frames: two SSIM chunks
        noise = torch.linspace(0.02, 0.4, 10).view(10, 1, 1, 1)  # a different noise level in each frame
        generated = (ground_truth + noise * torch.randn(10, 48, 64, 3, generator=generator)).clamp(0, 1)
    else:
        generated, ground_truth = real_pairs()
    expected_psnr, expected_ssim = skimage_values(generated, ground_truth)
    np.testing.assert_allclose(psnr(generated, ground_truth), expected_psnr, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ssim(generated, ground_truth), expected_ssim, atol=1e-4, rtol=0)
    assert len(set(np.round(expected_ssim, 3))) == len(expected_ssim), "the frames differ, so must their SSIM"


def test_psnr_of_identical_frames_is_inf_and_ssim_1_and_progress_is_reported():
    frames = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    assert np.all(np.isinf(psnr(frames, frames)))
    calls = []
    np.testing.assert_allclose(ssim(frames, frames, callback=lambda done, total: calls.append((done, total))), 1.0,
                               atol=1e-6)
    assert calls == [(8, 9), (9, 9)]


def test_psnr_and_ssim_need_frames_of_the_same_count_and_size():
    frames = torch.rand(3, 32, 32, 3)
    with pytest.raises(ValueError, match="ground_truth: 2 frames of 32x32 but generated has 3 frames of 32x32"):
        psnr(frames, frames[:2])
    with pytest.raises(ValueError, match="ground_truth: 3 frames of 32x16 but generated has 3 frames of 32x32"):
        ssim(frames, frames[:, :16])
    with pytest.raises(ValueError, match=r"generated: expected an IMAGE batch \[F, H, W, 3\]"):
        psnr(frames.permute(0, 3, 1, 2), frames)


@pytest.fixture(scope="module")
def tiny_clip():
    return tiny_clip_embedder()


def test_clip_i_and_clip_t_equal_a_direct_computation(tiny_clip):
    generator = torch.Generator().manual_seed(2)
    generated = torch.rand(10, 40, 40, 3, generator=generator)  # more than one embedding chunk
    training = torch.rand(3, 48, 40, 3, generator=generator)
    result = clip_consistency(tiny_clip, generated, training)

    one = [tiny_clip(frame[None])[0].double() for frame in generated]
    refs = [tiny_clip(frame[None])[0].double() for frame in training]
    cosine = torch.nn.functional.cosine_similarity
    clip_i = [np.mean([cosine(g, r, dim=0).item() for r in refs]) for g in one]
    clip_t = [cosine(a, b, dim=0).item() for a, b in zip(one, one[1:])]
    np.testing.assert_allclose(result.clip_i_per_frame, clip_i, atol=1e-6)
    np.testing.assert_allclose(result.clip_t_per_pair, clip_t, atol=1e-6)
    assert result.clip_i == pytest.approx(np.mean(clip_i), abs=1e-6)
    assert result.clip_t == pytest.approx(np.mean(clip_t), abs=1e-6)
    assert np.ptp(clip_t) > 1e-3, "random frames give different pair similarities"

    alone = clip_consistency(tiny_clip, generated[:1], None)
    assert np.isnan(alone.clip_i) and np.isnan(alone.clip_t)


def test_embed_images_must_return_one_embedding_per_frame():
    with pytest.raises(ValueError, match=r"embed_images: expected embeddings \[2, D\] for 2 frames of generated"):
        clip_consistency(lambda images: torch.zeros(1, 8), torch.rand(2, 8, 8, 3), None)
