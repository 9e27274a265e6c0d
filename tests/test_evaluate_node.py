"""PoseCrafter Evaluate: the node's numbers are the engine's (DWPose stand-in graphs that return known poses,
a tiny CLIP behind ComfyUI's CLIP_VISION interface), skipped metrics say so, bad inputs name themselves."""
import numpy as np
import pytest
import torch

from posecrafter import metrics
from posecrafter.dwpose import DWPoseExtractor
from posecrafter.pose import LEFT_HAND, RIGHT_HAND, PoseSequence, from_pose_keypoint, to_pose_keypoint
from posecrafter.reference import insert_reference_pose
from tests.comfy_pack import load_pack, pack_module
from tests.test_dwpose import FRAME_H, FRAME_W, build_detector, build_pose_model
from tests.tiny_models import TinyClipVision, tiny_clip_embedder

FRAMES = 5
NOBODY = 3  # a black frame: the stand-in detector finds nobody there


@pytest.fixture
def dwpose_models(tmp_path, monkeypatch):
    (tmp_path / "dwpose").mkdir()
    build_detector(tmp_path / "dwpose" / "yolox_l.onnx")
    build_pose_model(tmp_path / "dwpose" / "dw-ll_ucoco_384.onnx")
    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(tmp_path))
    return tmp_path / "dwpose"


def generated_frames():
    frames = torch.rand(FRAMES, FRAME_H, FRAME_W, 3, generator=torch.Generator().manual_seed(0)) * 0.3 + 0.7
    frames[NOBODY] = 0.0
    return frames


def target_poses(found):
    """The stand-in's pose moved by (2 + f, -f) px in frame f, without hands in frame 1."""
    shift = np.stack([2.0 + np.arange(FRAMES), -np.arange(FRAMES, dtype=float)], axis=1)[:, None, :]
    template = found.points[0]  # the stand-in finds the same pose in every bright frame
    scores = np.repeat(found.scores[:1], FRAMES, axis=0)
    scores[1, np.r_[LEFT_HAND, RIGHT_HAND]] = 0.0
    return PoseSequence(template[None] + shift, scores, FRAME_W, FRAME_H)


def evaluate(*args, **kwargs):
    cls = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterEvaluate"]
    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(*args, **kwargs)
    return out


def table(report):
    """The per-frame table of a report: column name -> [F] floats (NaN for '-')."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Per frame"))
    header = lines[start + 1].split()
    rows = [line.split() for line in lines[start + 2:]]
    return {name: np.array([np.nan if r[c] == "-" else float(r[c]) for r in rows]) for c, name in enumerate(header)}


def test_mse_p_of_the_node_is_the_engines_on_known_poses(dwpose_models):
    frames = generated_frames()
    found = DWPoseExtractor([dwpose_models]).extract(frames).poses
    target = target_poses(found)
    engine = metrics.pose_error(found, from_pose_keypoint(to_pose_keypoint(target)))
    shift = ((2.0 + np.arange(FRAMES)) / FRAME_W) ** 2 + (np.arange(FRAMES) / FRAME_H) ** 2
    for part in metrics.POSE_PARTS:
        expected = shift.copy()
        expected[NOBODY] = np.nan
        if part == "hands":
            expected[1] = np.nan
        np.testing.assert_allclose(engine.per_frame[part], expected, rtol=1e-9)

    report, plot = evaluate(frames, to_pose_keypoint(target))
    columns = table(report)
    for part, column in zip(metrics.POSE_PARTS, ("MSE-P", "body", "face", "hands")):
        np.testing.assert_allclose(columns[column], engine.per_frame[part], rtol=1e-3)  # 4 digits printed
        assert f"{engine.mean(part):.3e}" in report
    assert f"no person found in generated frame(s) {NOBODY}: pose error not measured there" in report
    assert "no hands in the target pose of frame(s) 1" in report
    assert "Worst frames, worst first:\n  pose error: all 4, 2, 1; body 4, 2, 1; face 4, 2, 1; hands 4, 2, 0\n" in report
    assert "Skipped: PSNR and SSIM: connect the real frames to 'ground_truth'; CLIP-I and CLIP-T: connect a Load " \
           "CLIP Vision node to 'clip_vision' and the training frames to 'training_images'." in report

    assert plot.shape == (1, 720, 640, 3) and 0 <= plot.min() and plot.max() <= 1
    top, bottom = plot[0, :360], plot[0, 360:]
    black = (top.max(dim=-1).values < 0.2).sum()
    assert black > 400, "the 'all' line, axes and labels are drawn in black"
    assert (top[..., 2] - top[..., 0] > 0.4).sum() > 50, "the body line is drawn in blue"
    assert (bottom < 0.9).any(dim=-1).sum() > 200, "the PSNR panel says why it is empty"


def test_the_inserted_reference_is_left_out(dwpose_models):
    frames = generated_frames()
    target = target_poses(DWPoseExtractor([dwpose_models]).extract(frames).poses)
    plain, _ = evaluate(frames, to_pose_keypoint(target))
    marked = to_pose_keypoint(insert_reference_pose(target, target.frame(4), 2))
    dropped, _ = evaluate(frames, marked)  # the sampler dropped the inserted frame
    assert dropped == plain.replace(
        "Numbers compare", "The inserted reference pose (2) of 'target_pose' is left out.\nNumbers compare", 1)
    with_frame = torch.cat([frames[:2], torch.zeros(1, FRAME_H, FRAME_W, 3), frames[2:]])
    kept, _ = evaluate(with_frame, marked)  # drop_inserted_frame off: frame 2 is the reference's
    assert kept.split("Per frame")[1] == plain.split("Per frame")[1]
    assert "Frame 2 of 'images', generated for the inserted reference pose, is left out." in kept


def test_psnr_ssim_and_clip_of_the_node_are_the_engines(dwpose_models):
    frames = generated_frames()
    target = target_poses(DWPoseExtractor([dwpose_models]).extract(frames).poses)
    generator = torch.Generator().manual_seed(1)
    noise = torch.linspace(0.02, 0.3, FRAMES).view(FRAMES, 1, 1, 1)
    ground_truth = (frames + noise * torch.randn(frames.shape, generator=generator)).clamp(0, 1)
    training = torch.rand(3, 64, 48, 3, generator=generator)

    report, plot = evaluate(frames, to_pose_keypoint(target), ground_truth, training, TinyClipVision())
    columns = table(report)
    np.testing.assert_allclose(columns["PSNR"], metrics.psnr(frames, ground_truth), atol=0.006)
    np.testing.assert_allclose(columns["SSIM"], metrics.ssim(frames, ground_truth), atol=6e-5)
    clip = metrics.clip_consistency(tiny_clip_embedder(), frames, training)
    np.testing.assert_allclose(columns["CLIP-I"], clip.clip_i_per_frame, atol=6e-5)
    np.testing.assert_allclose(columns["CLIP-T"][1:], clip.clip_t_per_pair, atol=6e-5)
    assert f"to the training frames (identity, clothes, scene): {clip.clip_i:.4f}" in report
    assert f"(temporal consistency): {clip.clip_t:.4f}" in report
    assert "Skipped" not in report
    psnr_colour = (plot[0, 360:, :, 0] > 0.5) & (plot[0, 360:, :, 1] < 0.3)
    assert psnr_colour.sum() > 100, "the PSNR line is drawn"

    without_training, _ = evaluate(frames, to_pose_keypoint(target), ground_truth, None, TinyClipVision())
    assert "Skipped: CLIP-I: connect the training frames to 'training_images'." in without_training
    assert "CLIP-I" not in table(without_training) and "CLIP-T" in table(without_training)


def test_ground_truth_frames_the_model_was_tuned_on_are_named_in_the_report(dwpose_models):
    frames = generated_frames()
    target = to_pose_keypoint(target_poses(DWPoseExtractor([dwpose_models]).extract(frames).poses))
    ground_truth = (frames * 0.9).clamp(0, 1)
    other = torch.rand(3, FRAME_H, FRAME_W, 3, generator=torch.Generator().manual_seed(2))
    same_sum = ground_truth[4].flip(0)  # the same pixel sum as ground-truth frame 4, not the same frame
    disjoint, _ = evaluate(frames, target, ground_truth, torch.cat([other, same_sum[None]]))
    assert "Warning" not in disjoint
    overlapping, _ = evaluate(frames, target, ground_truth, torch.cat([other, ground_truth[[4, 1]]]))
    first_lines = overlapping.splitlines()[:3]
    assert any(line.startswith("Warning: ground-truth frame(s) 1, 4 are frames the model was tuned on")
               for line in first_lines), first_lines


def test_bad_inputs_name_the_input_and_the_fix(dwpose_models):
    frames = generated_frames()
    target = to_pose_keypoint(target_poses(DWPoseExtractor([dwpose_models]).extract(frames).poses))
    with pytest.raises(ValueError, match="'target_pose' has 4 poses but 'images' has 5 frames: connect the poses"):
        evaluate(frames, target[:4])
    with pytest.raises(ValueError, match="'ground_truth' has 4 frames of 320x240 but 'images' has 5 frames of 320x240"):
        evaluate(frames, target, frames[:4])
    with pytest.raises(ValueError, match="'ground_truth' has 5 frames of 160x240 but .*Upscale Image"):
        evaluate(frames, target, frames[:, :, :160])
    with pytest.raises(ValueError, match="'clip_vision' is not a CLIP model .* load a CLIP ViT file"):
        evaluate(frames, target, clip_vision=TinyClipVision(image_mean=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="'clip_vision' is a str, not a CLIP vision model: connect a Load CLIP Vision"):
        evaluate(frames, target, clip_vision="clip_vision_h.safetensors")


def test_missing_dwpose_files_are_named_before_the_node_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(tmp_path))
    message = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterEvaluate"].VALIDATE_INPUTS(images=None)
    assert message.startswith("yolox_l.onnx was not found in") and str(tmp_path / "dwpose") in message
    assert pack_module("nodes.pose_nodes").dwpose_files_found is pack_module("nodes.evaluate_nodes").dwpose_files_found
