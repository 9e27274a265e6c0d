"""The node classes, imported the way ComfyUI imports the pack, exercised without ComfyUI."""
import numpy as np
import pytest
import torch

from tests.comfy_pack import load_pack, pack_module

POSECRAFTER_TYPES = ("POSECRAFTER_MODEL", "POSECRAFTER_INVERSION")


def synthetic_pose(frames, width=64, height=64, shift=1.0):
    """POSE_KEYPOINT with body, face and both hands; every frame moves the person `shift` px to the right."""
    rng = np.random.default_rng(0)
    body = rng.uniform(0.3, 0.7, (18, 2)) * [width, height]
    face = rng.uniform(0.4, 0.5, (70, 2)) * [width, height]
    hands = [rng.uniform(0.2, 0.35, (21, 2)) * [width, height], rng.uniform(0.65, 0.8, (21, 2)) * [width, height]]

    def flat(points, dx):
        return [float(v) for x, y in points for v in (x + dx, y, 1.0)]

    return [
        {
            "people": [{
                "pose_keypoints_2d": flat(body, f * shift),
                "face_keypoints_2d": flat(face, f * shift),
                "hand_left_keypoints_2d": flat(hands[0], f * shift),
                "hand_right_keypoints_2d": flat(hands[1], f * shift),
            }],
            "canvas_width": width,
            "canvas_height": height,
        }
        for f in range(frames)
    ]


def node(name):
    return load_pack().NODE_CLASS_MAPPINGS[name]()


def test_pack_registers_every_node_with_prefix_category_and_tooltips():
    pack = load_pack()
    expected = {
        "PoseCrafterModelLoader", "PoseCrafterDWPoseExtractor", "PoseCrafterPoseRender", "PoseCrafterOneShotTuner",
        "PoseCrafterSaveTuned", "PoseCrafterLoadTuned", "PoseCrafterReferenceFrameSelector",
        "PoseCrafterPoseInserter", "PoseCrafterDDIMInverter", "PoseCrafterLatentEditor",
        "PoseCrafterTemporalSampler", "PoseCrafterSelectFrames", "PoseCrafterEvaluate",
    }
    assert set(pack.NODE_CLASS_MAPPINGS) == expected
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == expected
    assert not hasattr(pack, "comfy_entrypoint")
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY.startswith("PoseCrafter/"), name
        assert callable(getattr(cls, cls.FUNCTION)), name
        assert cls.DESCRIPTION, name
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for input_name, (_, options) in section.items():
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
        if cls.RETURN_TYPES:
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS), name
        else:
            assert cls.OUTPUT_NODE, name


def test_nodes_import_no_comfyui_modules():
    import sys

    load_pack()
    assert "folder_paths" not in sys.modules and "comfy" not in sys.modules
    assert not pack_module("nodes._comfy").IN_COMFYUI


def test_pose_render_scales_the_canvas():
    (image,) = node("PoseCrafterPoseRender").render(synthetic_pose(3), 128, 96)
    assert image.shape == (3, 96, 128, 3) and image.dtype == torch.float32
    assert 0 < image.mean() < 1
    (small,) = node("PoseCrafterPoseRender").render(synthetic_pose(1), 64, 64)
    assert not torch.equal(small, image[:1, :64, :64])


def test_pose_inserter_marks_the_reference_and_checks_position():
    target = synthetic_pose(4, shift=2.0)
    reference = synthetic_pose(1)
    (inserted,) = node("PoseCrafterPoseInserter").insert(target, reference, 2)
    assert len(inserted) == 5
    assert [bool(frame.get("posecrafter_inserted_reference")) for frame in inserted] == [False, False, True, False, False]
    assert inserted[2]["people"][0]["pose_keypoints_2d"] == pytest.approx(reference[0]["people"][0]["pose_keypoints_2d"])
    assert inserted[3]["people"][0]["pose_keypoints_2d"] == pytest.approx(target[2]["people"][0]["pose_keypoints_2d"])
    with pytest.raises(ValueError, match="'position' is 5 .* use 0..4"):
        node("PoseCrafterPoseInserter").insert(target, reference, 5)
    with pytest.raises(ValueError, match="'reference_pose' must hold 1 pose"):
        node("PoseCrafterPoseInserter").insert(target, synthetic_pose(2), 0)


def test_reference_selector_picks_the_closest_training_frame():
    training = synthetic_pose(5, shift=4.0)
    target = [training[3]] * 3  # the target motion sits exactly on training frame 3
    images = torch.rand(5, 64, 64, 3)
    latent = {"samples": torch.randn(5, 4, 8, 8)}
    out = node("PoseCrafterReferenceFrameSelector").select(images, latent, training, target)
    ref_latent, ref_image, ref_pose, index, report = out["result"]
    assert index == 3
    assert torch.equal(ref_latent["samples"], latent["samples"][3:4])
    assert torch.equal(ref_image, images[3:4])
    assert ref_pose[0]["people"][0]["pose_keypoints_2d"] == pytest.approx(training[3]["people"][0]["pose_keypoints_2d"])
    assert "reference frame 3 of 5" in report and "Video-SIM 0" in report
    assert out["ui"]["text"] == [report]
    with pytest.raises(ValueError, match="'training_pose' has 4 frames but 'latent' has 5"):
        node("PoseCrafterReferenceFrameSelector").select(images, latent, training[:4], target)


def test_select_frames_takes_frames_with_uniform_stride():
    images = torch.arange(36, dtype=torch.float32).view(36, 1, 1, 1).expand(36, 4, 4, 3)
    select = node("PoseCrafterSelectFrames").select

    def picked(frames, clip=images):
        (out,) = select(clip, frames)
        assert out.shape[1:] == clip.shape[1:]
        return out[:, 0, 0, 0].int().tolist()

    assert picked(8) == [0, 4, 8, 12, 16, 20, 24, 28]  # the paper's TED setting: 8 of the first 36 frames
    assert picked(5) == [0, 7, 14, 21, 28]  # stride floor(36 / 5) = 7
    assert picked(1) == [0]
    assert picked(0) == picked(36) == list(range(36))
    assert picked(3, images[:10]) == [0, 3, 6]
    with pytest.raises(ValueError, match="'frames' is 37 but the training video has only 36 frames: set frames to 36"):
        select(images, 37)


def test_latent_helpers_copy_and_check():
    common = pack_module("nodes.common")
    samples = torch.randn(2, 4, 8, 8)
    copy = common.latent_samples({"samples": samples}, "latent")
    copy += 1
    assert not torch.equal(copy, samples)
    with pytest.raises(ValueError, match="'latent' must be an SD1.5 LATENT"):
        common.latent_samples({"samples": torch.randn(2, 16, 8, 8)}, "latent")
    cond = [[torch.randn(1, 77, 768), {"pooled_output": torch.randn(1, 768)}]]
    assert common.prompt_embeds(cond, "positive", 768).shape == (1, 77, 768)
    with pytest.raises(ValueError, match="'positive' has text embeddings of shape .*1024"):
        common.prompt_embeds([[torch.randn(1, 77, 1024), {}]], "positive", 768)
    with pytest.raises(ValueError, match="'negative' is not a CONDITIONING"):
        common.prompt_embeds(None, "negative", 768)
    with pytest.raises(ValueError, match="'positive' holds 2 conditionings"):
        common.prompt_embeds(cond + cond, "positive", 768)
    with pytest.raises(ValueError, match="'positive' carries a ComfyUI ControlNet"):
        common.prompt_embeds([[cond[0][0], {"control": object()}]], "positive", 768)


def test_sanitised_tuned_file_names():
    sanitise = pack_module("nodes.model_nodes").sanitise_name
    assert sanitise("my run") == "my_run.safetensors"
    assert sanitise("../../etc/passwd") == "passwd.safetensors"
    assert sanitise("C:\\models\\x.safetensors") == "x.safetensors"
    assert sanitise("ok-name_1.2") == "ok-name_1.2.safetensors"
    with pytest.raises(ValueError, match="'filename' is empty"):
        sanitise("///")


def test_loss_curve_image():
    plot = pack_module("nodes.plot").loss_curve_image
    image = plot([1.0, 0.5, 0.25, 0.2, float("nan"), 0.1])
    assert image.shape == (1, 360, 640, 3) and 0 <= image.min() and image.max() <= 1
    blue = (image[0, :, :, 2] > 0.6) & (image[0, :, :, 0] < 0.3)
    assert blue.sum() > 50, "the running mean is drawn in blue"
    assert plot([0.3]).shape == (1, 360, 640, 3)
    assert not torch.equal(plot([1.0, 0.1]), plot([0.1, 1.0]))


def test_validate_inputs_name_the_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sd15.safetensors").write_bytes(b"")
    loader = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterModelLoader"]
    assert loader.INPUT_TYPES()["required"]["checkpoint"][0] == ["sd15.safetensors"]
    message = loader.VALIDATE_INPUTS(checkpoint="sd15.safetensors", controlnet="openpose.pth")
    assert "ControlNet 'openpose.pth' not found in models/controlnet" in message
    assert str(tmp_path / "controlnet") in message and "checkpoint" not in message
    assert "not found in models/checkpoints" in loader.VALIDATE_INPUTS(checkpoint="other.safetensors")
    both = loader.VALIDATE_INPUTS(checkpoint="other.safetensors", controlnet="openpose.pth")
    assert "models/checkpoints" in both and "models/controlnet" in both

    sampler = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterTemporalSampler"]
    assert sampler.VALIDATE_INPUTS(context_length=0, context_overlap=4) is True
    assert sampler.VALIDATE_INPUTS(context_length=16, context_overlap=4) is True
    assert "must be smaller than context_length" in sampler.VALIDATE_INPUTS(context_length=4, context_overlap=4)
    assert sampler.VALIDATE_INPUTS() is True  # linked values are unknown at validation time

    dwpose = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterDWPoseExtractor"]
    message = dwpose.VALIDATE_INPUTS(images=None)
    assert message.startswith("yolox_l.onnx was not found in") and str(tmp_path / "dwpose") in message

    tuned = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterLoadTuned"]
    assert "not found in models/posecrafter" in tuned.VALIDATE_INPUTS(tuned_weights="gone.safetensors")


def test_model_names_cannot_leave_the_model_folders(tmp_path, monkeypatch):
    """An API prompt can send any string as a model name; only files inside the model folders resolve."""
    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "sub" / "sd15.safetensors").write_bytes(b"")
    (tmp_path / "outside.safetensors").write_bytes(b"")
    find = pack_module("nodes._comfy").find_model
    assert find("checkpoints", "sub/sd15.safetensors") == str(tmp_path / "models" / "checkpoints" / "sub" / "sd15.safetensors")
    assert find("checkpoints", "sub/../sub/sd15.safetensors") is not None
    assert find("checkpoints", "../../outside.safetensors") is None
    assert find("checkpoints", str(tmp_path / "outside.safetensors")) is None
    loader = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterModelLoader"]
    assert "not found in models/checkpoints" in loader.VALIDATE_INPUTS(checkpoint="../../outside.safetensors")


def test_validate_inputs_name_inputs_comfyui_reports_against():
    """ComfyUI (execution.py, validate_inputs) passes VALIDATE_INPUTS only the prompt inputs its signature
    names (linked ones as None) and reports a returned message once per input it passed: a signature
    naming no input of the node runs, but its message is dropped and the prompt is accepted. The inputs it
    names also skip ComfyUI's own min/max and list checks."""
    import inspect

    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        if not hasattr(cls, "VALIDATE_INPUTS"):
            continue
        spec = cls.INPUT_TYPES()
        declared = [a for a in inspect.getfullargspec(cls.VALIDATE_INPUTS).args if a != "cls"]
        inputs = {**spec.get("required", {}), **spec.get("optional", {})}
        assert declared and set(declared) <= set(inputs), f"{name}.VALIDATE_INPUTS names {declared}"
        assert set(declared) & set(spec["required"]), f"{name}: name a required input, always in the prompt"


def test_model_lists_include_diffusers_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(tmp_path))
    folder = tmp_path / "diffusers" / "tiny-sd15" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    cn = tmp_path / "controlnet" / "tiny-openpose"
    cn.mkdir(parents=True)
    (cn / "config.json").write_text("{}")
    (cn / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (tmp_path / "controlnet" / "openpose.pth").write_bytes(b"")
    spec = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterModelLoader"].INPUT_TYPES()["required"]
    assert spec["checkpoint"][0] == ["diffusers/tiny-sd15"]
    assert spec["controlnet"][0] == ["openpose.pth", "tiny-openpose"]


def test_requirements_and_pyproject_list_the_same_dependencies():
    import tomllib

    from tests.comfy_pack import ROOT

    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = {line.replace('"', "'").replace(" ", "") for line in lines if line}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert requirements == {d.replace(" ", "") for d in project}
    assert not any(r.startswith("torch") for r in requirements), "ComfyUI owns the torch install"


def test_load_tuned_reruns_when_the_file_changes(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("POSECRAFTER_MODELS_DIR", str(tmp_path))
    (tmp_path / "posecrafter").mkdir()
    weights = tmp_path / "posecrafter" / "run.safetensors"
    weights.write_bytes(b"")
    load_tuned = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterLoadTuned"]
    first = load_tuned.IS_CHANGED(tuned_weights="run.safetensors")
    os.utime(weights, (first + 10, first + 10))
    assert load_tuned.IS_CHANGED(tuned_weights="run.safetensors") == first + 10


def test_tuner_seed_has_no_control_after_generate():
    """The frontend (1.35) gives every INT input named "seed" a control widget unless the input says
    control_after_generate False, and a newly added node's control is 'randomize': on the tuner that would
    change the seed, and so re-run hours of tuning, at every queue."""
    tuner = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterOneShotTuner"]
    assert tuner.INPUT_TYPES()["required"]["seed"][1]["control_after_generate"] is False
