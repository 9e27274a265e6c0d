"""Workflow (a) end to end on tiny models, by calling the node functions in the workflow's order.

The tiny UNet and ControlNet are saved as diffusers folders in a models tree and loaded through the
Model Loader, as a user's files would be. Frames, latents and conditioning stand in for what core
LoadVideo / VAE Encode / CLIP Text Encode would give; poses are synthetic POSE_KEYPOINT.
"""
import copy

import pytest
import torch

from tests.comfy_pack import load_pack, pack_module
from tests.test_dwpose import build_detector, build_pose_model
from tests.test_nodes import synthetic_pose
from tests.tiny_models import TEXT_WIDTH, tiny_controlnet, tiny_unet

TRAIN_FRAMES, TARGET_FRAMES, SIZE = 4, 3, 64


def run(name, *args, **kwargs):
    """Run a node the way ComfyUI's executor does: under torch.inference_mode()."""
    cls = load_pack().NODE_CLASS_MAPPINGS[name]
    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(*args, **kwargs)
    return out.get("result", ()) if isinstance(out, dict) else out


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_unet().save_pretrained(root / "diffusers" / "tiny-sd15" / "unet")
    tiny_controlnet().save_pretrained(root / "controlnet" / "tiny-openpose")
    return root


@pytest.fixture
def models(models_dir, monkeypatch):
    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(models_dir))
    return models_dir


def conditioning(seed):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, TEXT_WIDTH, generator=generator), {"pooled_output": torch.zeros(1, TEXT_WIDTH)}]]


def trainable(handle):
    return {k: v.clone() for k, v in handle.trainable.items()}


def test_workflow_a_chain(models):
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(TRAIN_FRAMES, SIZE, SIZE, 3, generator=generator)
    latent = {"samples": torch.randn(TRAIN_FRAMES, 4, SIZE // 8, SIZE // 8, generator=generator)}
    training_pose = synthetic_pose(TRAIN_FRAMES, SIZE, SIZE, shift=2.0)
    target_pose = synthetic_pose(TARGET_FRAMES, SIZE, SIZE, shift=3.0)
    source, target = conditioning(1), conditioning(2)
    inputs_before = copy.deepcopy((frames, latent, training_pose, target_pose, source))

    spec = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterModelLoader"].INPUT_TYPES()["required"]
    assert "diffusers/tiny-sd15" in spec["checkpoint"][0] and "tiny-openpose" in spec["controlnet"][0]
    (base,) = run("PoseCrafterModelLoader", "diffusers/tiny-sd15", "tiny-openpose", "fp32")
    base_weights = trainable(base)

    tuned, loss_curve = run("PoseCrafterOneShotTuner", base, latent, training_pose, source, 3, 0.0, "clean", 0, False)
    assert loss_curve.shape == (1, 360, 640, 3)
    assert tuned.info["steps"] == 3 and tuned.info["frames"] == TRAIN_FRAMES
    changed = [k for k in base_weights if not torch.equal(base_weights[k], tuned.trainable[k])]
    assert changed, "tuning changed no trainable tensor"
    assert all(torch.equal(base_weights[k], base.trainable[k]) for k in base_weights), "tuning modified its input"

    run("PoseCrafterSaveTuned", tuned, "tuned-é名 run")
    assert (models / "posecrafter" / "tuned-é名 run.safetensors").is_file()
    assert load_pack().NODE_CLASS_MAPPINGS["PoseCrafterLoadTuned"].INPUT_TYPES()["required"]["tuned_weights"][0] == ["tuned-é名 run.safetensors"]
    (reloaded,) = run("PoseCrafterLoadTuned", base, "tuned-é名 run.safetensors")
    assert all(torch.equal(reloaded.trainable[k], tuned.trainable[k]) for k in changed)

    ref_latent, ref_image, ref_pose, index, _ = run(
        "PoseCrafterReferenceFrameSelector", frames, latent, training_pose, target_pose
    )
    (poses,) = run("PoseCrafterPoseInserter", target_pose, ref_pose, 0)
    (inversion,) = run("PoseCrafterDDIMInverter", tuned, ref_latent, ref_pose, source, 4)
    assert inversion.latents.shape == (5, 4, SIZE // 8, SIZE // 8)
    torch.testing.assert_close(inversion.latents[0], latent["samples"][index])
    edited, report = run("PoseCrafterLatentEditor", inversion, poses, True, True, 1)
    assert edited["samples"].shape == (TARGET_FRAMES + 1, 4, SIZE // 8, SIZE // 8)
    assert torch.equal(edited["samples"][0], inversion.final[0]), "the inserted frame is not edited"
    assert report.count("\n") == TARGET_FRAMES and "face edited" in report

    (out,) = run("PoseCrafterTemporalSampler", tuned, edited, poses, target, 4, 1.0, 1.0, 0, 4, True)
    assert out["samples"].shape == (TARGET_FRAMES, 4, SIZE // 8, SIZE // 8)
    assert torch.isfinite(out["samples"]).all()
    (again,) = run("PoseCrafterTemporalSampler", reloaded, edited, poses, target, 4, 1.0, 1.0, 0, 4, True)
    torch.testing.assert_close(again["samples"], out["samples"], rtol=0, atol=1e-5)
    (untuned,) = run("PoseCrafterTemporalSampler", base, edited, poses, target, 4, 1.0, 1.0, 0, 4, True)
    assert not torch.allclose(untuned["samples"], out["samples"]), "the sampler ignored the tuned weights"
    (with_ref,) = run("PoseCrafterTemporalSampler", tuned, edited, poses, target, 4, 1.0, 1.0, 0, 4, False)
    assert torch.equal(with_ref["samples"][1:], out["samples"])

    # nothing upstream was modified in place (ComfyUI caches and shares node outputs)
    for before, after in zip(inputs_before, (frames, latent, training_pose, target_pose, source)):
        if isinstance(before, torch.Tensor):
            assert torch.equal(before, after)
        elif isinstance(before, dict):
            assert torch.equal(before["samples"], after["samples"])
        elif isinstance(before[0], dict):
            assert before == after
        else:
            assert torch.equal(before[0][0], after[0][0])


def test_sampler_windows_cfg_and_late_edit(models):
    (model,) = run("PoseCrafterModelLoader", "diffusers/tiny-sd15", "tiny-openpose", "fp32")
    target_pose = synthetic_pose(5, SIZE, SIZE, shift=3.0)
    ref_pose = synthetic_pose(1, SIZE, SIZE)
    ref_latent = {"samples": torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))}
    (poses,) = run("PoseCrafterPoseInserter", target_pose, ref_pose, 1)
    (inversion,) = run("PoseCrafterDDIMInverter", model, ref_latent, ref_pose, conditioning(1), 3)

    early, _ = run("PoseCrafterLatentEditor", inversion, poses, True, True, 1)
    late, report = run("PoseCrafterLatentEditor", inversion, poses, True, False, 2)
    assert torch.equal(late["samples"], inversion.final.repeat(6, 1, 1, 1)), "alpha > 1 starts from unedited copies"
    assert "left hand skipped: turned off" in report
    args = (poses, conditioning(2), 3, 1.0, 1.0)
    (plain,) = run("PoseCrafterTemporalSampler", model, early, *args, 0, 4, True)
    (edited_late,) = run("PoseCrafterTemporalSampler", model, late, *args, 0, 4, True)
    assert not torch.allclose(plain["samples"], edited_late["samples"])
    (windowed,) = run("PoseCrafterTemporalSampler", model, early, *args, 3, 1, True)
    assert windowed["samples"].shape == plain["samples"].shape and torch.isfinite(windowed["samples"]).all()
    (one_window,) = run("PoseCrafterTemporalSampler", model, early, *args, 6, 1, True)
    torch.testing.assert_close(one_window["samples"], plain["samples"], rtol=0, atol=1e-6)

    with pytest.raises(ValueError, match="cfg > 1 needs a 'negative'"):
        run("PoseCrafterTemporalSampler", model, early, poses, conditioning(2), 3, 3.0, 1.0, 0, 4, True)
    (guided,) = run("PoseCrafterTemporalSampler", model, early, poses, conditioning(2), 3, 3.0, 1.0, 0, 4, True,
                    negative=conditioning(4))
    assert not torch.allclose(guided["samples"], plain["samples"])
    with pytest.raises(ValueError, match="'pose' has 5 frames but 'latent' has 6"):
        run("PoseCrafterTemporalSampler", model, early, target_pose, conditioning(2), 3, 1.0, 1.0, 0, 4, True)
    with pytest.raises(ValueError, match="no inserted reference frame"):
        run("PoseCrafterLatentEditor", inversion, target_pose, True, True, 1)
    with pytest.raises(ValueError, match="'alpha' is 4 but the inversion has 3 DDIM steps"):
        run("PoseCrafterLatentEditor", inversion, poses, True, True, 4)
    for latents in (early, late):
        with pytest.raises(ValueError, match="'steps' is 4 but the starting latents come from a 3-step DDIM inversion"):
            run("PoseCrafterTemporalSampler", model, latents, poses, conditioning(2), 4, 1.0, 1.0, 0, 4, True)
    with pytest.raises(ValueError, match="'conditioning' has text embeddings of shape"):
        run("PoseCrafterDDIMInverter", model, ref_latent, ref_pose, [[torch.randn(1, 77, 768), {}]], 3)


def test_dwpose_node_on_tiny_onnx_models(tmp_path, monkeypatch):
    """The DWPose node with stand-in ONNX graphs (the pose pipeline's tests build them): a black frame has
    nobody in it, which is an error naming the frame unless fill_gaps is on."""
    (tmp_path / "dwpose").mkdir()
    build_detector(tmp_path / "dwpose" / "yolox_l.onnx")
    build_pose_model(tmp_path / "dwpose" / "dw-ll_ucoco_384.onnx")
    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(tmp_path))
    extractor_class = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterDWPoseExtractor"]
    assert extractor_class.VALIDATE_INPUTS() is True
    images = torch.full((3, 240, 320, 3), 0.9)
    images[1] = 0.0
    with pytest.raises(ValueError, match="no person detected in frame\\(s\\) 1 of 3.*fill_gaps"):
        run("PoseCrafterDWPoseExtractor", images, False)
    keypoints, skeleton = run("PoseCrafterDWPoseExtractor", images, True)
    assert len(keypoints) == 3 and all(frame["people"] for frame in keypoints)
    assert keypoints[0]["canvas_width"] == 320 and keypoints[0]["canvas_height"] == 240
    assert keypoints[1] == keypoints[0], "the gap is filled from its identical neighbours"
    assert skeleton.shape == (3, 240, 320, 3) and skeleton.max() > 0
    with pytest.raises(ValueError, match=r"^'images': no person detected in any of the 2 frames, so fill_gaps has no "
                                         "frame to fill the others from: use a clip where the whole person is in view"):
        run("PoseCrafterDWPoseExtractor", images[1:2].repeat(2, 1, 1, 1), True)


@pytest.mark.parametrize("move", ["activate", "offload"])
def test_moving_the_model_under_inference_mode_keeps_it_tunable(move, monkeypatch):
    """ComfyUI runs every node under inference_mode. A model moved there (CPU offload <-> GPU) must not end up
    with inference-tensor weights, or the next tuning cannot enable their gradients. The meta device stands
    in for the second device, which a CPU machine lacks."""
    model_nodes = pack_module("nodes.model_nodes")
    model = pack_module("posecrafter.model").PoseCrafterModel(tiny_unet(), tiny_controlnet())
    handle = model_nodes.ModelHandle.untuned(model, {})
    monkeypatch.setattr(model_nodes._comfy, "offload_device", lambda: torch.device("meta"))
    with torch.inference_mode():
        if move == "activate":
            handle.activate(torch.device("meta"))
        else:
            handle.offload()
    assert model.device.type == "meta"
    assert not any(p.is_inference() for p in model.parameters())


def test_tuning_and_sampling_drop_the_cached_dwpose_sessions(models):
    """onnxruntime's GPU memory is out of ComfyUI's reach: the DWPose sessions, kept between the two pose
    extractions of a workflow, are dropped before the UNet takes the GPU."""
    (models / "dwpose").mkdir(exist_ok=True)
    build_detector(models / "dwpose" / "yolox_l.onnx")
    build_pose_model(models / "dwpose" / "dw-ll_ucoco_384.onnx")
    cached = pack_module("nodes.pose_nodes")._extractors
    (model,) = run("PoseCrafterModelLoader", "diffusers/tiny-sd15", "tiny-openpose", "fp32")
    latent = {"samples": torch.randn(1, 4, SIZE // 8, SIZE // 8)}
    frame = torch.full((1, SIZE, SIZE, 3), 0.9)

    pose, _ = run("PoseCrafterDWPoseExtractor", frame, False)
    assert cached
    run("PoseCrafterDDIMInverter", model, latent, pose, conditioning(1), 1)
    assert not cached
    run("PoseCrafterDWPoseExtractor", frame, False)
    assert cached
    run("PoseCrafterOneShotTuner", model, latent, pose, conditioning(1), 1, 0.0, "clean", 0, False)
    assert not cached


def test_node_widgets_reach_the_engine(models):
    """Every widget of the tuner and the sampler changes what the engine computes: the nodes' outputs equal
    direct engine calls with the same non-default values (a dropped or swapped argument would differ)."""
    engine = {name: pack_module(f"posecrafter.{name}") for name in ("sampling", "tuning", "latent_edit", "model")}
    pose_images_for = pack_module("nodes.common").pose_images_for
    from_pose_keypoint = pack_module("posecrafter.pose").from_pose_keypoint
    generator = torch.Generator().manual_seed(5)
    train_latent = {"samples": torch.randn(TRAIN_FRAMES, 4, SIZE // 8, SIZE // 8, generator=generator)}
    train_pose = synthetic_pose(TRAIN_FRAMES, SIZE, SIZE, shift=2.0)
    source, target, negative = conditioning(1), conditioning(2), conditioning(4)

    (base,) = run("PoseCrafterModelLoader", "diffusers/tiny-sd15", "tiny-openpose", "fp32")
    tuned, _ = run("PoseCrafterOneShotTuner", base, train_latent, train_pose, source, 2, 1e-3, "clean", 7, False)
    (fresh,) = run("PoseCrafterModelLoader", "diffusers/tiny-sd15", "tiny-openpose", "fp32")
    module = fresh.activate(torch.device("cpu"))
    train_images = pose_images_for(from_pose_keypoint(train_pose), train_latent["samples"])
    engine["tuning"].tune(module, train_latent["samples"], train_images, source[0][0], steps=2, lr=1e-3,
                          update_rule="clean", seed=7)
    for name, param in module.trainable_parameters().items():
        torch.testing.assert_close(tuned.trainable[name], param, rtol=0, atol=1e-6)

    target_pose, ref_pose = synthetic_pose(5, SIZE, SIZE, shift=3.0), synthetic_pose(1, SIZE, SIZE)
    (poses,) = run("PoseCrafterPoseInserter", target_pose, ref_pose, 1)
    ref_latent = {"samples": torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=generator)}
    (inversion,) = run("PoseCrafterDDIMInverter", tuned, ref_latent, ref_pose, source, 3)
    late, _ = run("PoseCrafterLatentEditor", inversion, poses, True, True, 2)
    (out,) = run("PoseCrafterTemporalSampler", tuned, late, poses, target, 3, 2.0, 0.5, 3, 2, False, negative=negative)

    plan = late["posecrafter_edit"][1]
    hook = engine["latent_edit"].alpha_edit_hook(
        plan, lambda t: engine["model"].to_model_space(inversion.latent_at(t)), 2)
    with torch.inference_mode():
        direct = engine["sampling"].sample(
            tuned.activate(torch.device("cpu")), late["samples"],
            pose_images_for(from_pose_keypoint(poses), late["samples"]), target[0][0], negative[0][0], steps=3,
            guidance_scale=2.0, controlnet_scale=0.5, key_index=1, context_length=3, context_overlap=2,
            step_hook=hook)
    torch.testing.assert_close(out["samples"], direct, rtol=0, atol=1e-5)
