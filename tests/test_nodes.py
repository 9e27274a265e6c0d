"""The node classes, imported the way ComfyUI imports the pack, exercised without ComfyUI."""
import numpy as np
import pytest
import torch

from benchmarks.poses import dancing_person, dwpose_noise
from posecrafter.pose import PoseSequence, from_pose_keypoint, to_pose_keypoint
from posecrafter.reference import select_reference_frame
from posecrafter.training_frames import select_covering_frames, uniform_indices
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
        "PoseCrafterTemporalSampler", "PoseCrafterSelectFrames", "PoseCrafterPoseRetarget", "PoseCrafterEvaluate",
        "PoseCrafterLoadPoses", "PoseCrafterSavePoses",
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
    # a plain tuple, no ui text: the workflows' Preview as Text shows the report, so it is printed once
    assert isinstance(out, tuple)
    ref_latent, ref_image, ref_pose, index, report = out
    assert index == 3
    assert torch.equal(ref_latent["samples"], latent["samples"][3:4])
    assert torch.equal(ref_image, images[3:4])
    assert ref_pose[0]["people"][0]["pose_keypoints_2d"] == pytest.approx(training[3]["people"][0]["pose_keypoints_2d"])
    assert "reference frame 3 of 5" in report and "Video-SIM 0" in report
    with pytest.raises(ValueError, match="'training_pose' has 4 frames but 'latent' has 5"):
        node("PoseCrafterReferenceFrameSelector").select(images, latent, training[:4], target)


def test_select_frames_takes_frames_with_uniform_stride():
    images = torch.arange(36, dtype=torch.float32).view(36, 1, 1, 1).expand(36, 4, 4, 3)
    select = node("PoseCrafterSelectFrames").select

    def picked(frames, clip=images):
        out, poses = select(clip, frames)
        assert poses == []  # no training_pose connected
        assert out.shape[1:] == clip.shape[1:]
        return out[:, 0, 0, 0].int().tolist()

    assert picked(8) == [0, 4, 8, 12, 16, 20, 24, 28]  # the paper's TED setting: 8 of the first 36 frames
    assert picked(5) == [0, 7, 14, 21, 28]  # stride floor(36 / 5) = 7
    assert picked(1) == [0]
    assert picked(0) == picked(36) == list(range(36))
    assert picked(3, images[:10]) == [0, 3, 6]
    with pytest.raises(ValueError, match="'frames' is 37 but the training video has only 36 frames: set frames to 36"):
        select(images, 37)


def test_select_frames_cover_mode_picks_frames_and_their_poses():
    clean = dancing_person(60, seed=7, fps=6)
    training_pose = to_pose_keypoint(dwpose_noise(clean, seed=7))
    target_pose = to_pose_keypoint(PoseSequence(clean.points[[41] * 30 + list(range(0, 60, 7))], np.ones((39, 134)), 512, 512))
    images = torch.arange(60, dtype=torch.float32).view(60, 1, 1, 1).expand(60, 4, 4, 3)
    select = node("PoseCrafterSelectFrames").select
    out, poses = select(images, 8, "cover", training_pose, target_pose)
    expected = select_covering_frames(from_pose_keypoint(training_pose), from_pose_keypoint(target_pose), 8)
    assert 41 in expected and out[:, 0, 0, 0].int().tolist() == expected
    assert poses == [training_pose[i] for i in expected]
    # uniform mode passes the selected frames' poses on, and ignores target_pose
    out, poses = select(images, 8, "uniform", training_pose, target_pose)
    assert out[:, 0, 0, 0].int().tolist() == uniform_indices(60, 8)
    assert poses == [training_pose[i] for i in uniform_indices(60, 8)]
    # 0 frames keeps them all, in both modes
    assert select(images, 0, "cover", training_pose, target_pose)[1] == training_pose


def test_select_frames_cover_mode_bad_input():
    pose = synthetic_pose(6, shift=3.0)
    images = torch.rand(6, 4, 4, 3)
    select = node("PoseCrafterSelectFrames").select
    with pytest.raises(ValueError, match="'training_pose' is not connected: cover mode needs"):
        select(images, 3, "cover", None, pose)
    with pytest.raises(ValueError, match="'target_pose' is not connected"):
        select(images, 3, "cover", pose, None)
    with pytest.raises(ValueError, match="'training_pose' has 5 frames but 'images' has 6"):
        select(images, 3, "uniform", pose[:5])
    emptied = [dict(frame, people=[]) if i in (1, 2, 3, 4) else frame for i, frame in enumerate(pose)]
    with pytest.raises(ValueError, match=r"'frames' is 3 but only 2 training frames show a person \(none in frames \[1, 2, 3, 4\]\)"):
        select(images, 3, "cover", emptied, pose)
    with pytest.raises(ValueError, match="'frames' is 7 but the training video has only 6 frames"):
        select(images, 7, "cover", pose, pose)


def test_reference_selector_distance_widget():
    clean = dancing_person(8, seed=3, fps=30 / 37)
    training = to_pose_keypoint(dwpose_noise(clean, seed=11))
    target = to_pose_keypoint(clean.frame(5))
    images, latent = torch.rand(8, 64, 64, 3), {"samples": torch.randn(8, 4, 8, 8)}
    selector = node("PoseCrafterReferenceFrameSelector")
    for distance in ("visible", "paper"):
        out = selector.select(images, latent, training, target, distance)
        expected = select_reference_frame(from_pose_keypoint(training), from_pose_keypoint(target), distance).index
        assert out[3] == expected and f"'{distance}' pose distances" in out[4]
    assert selector.select(images, latent, training, target)[3] == 5  # default: visible
    with pytest.raises(ValueError, match="'distance' is 'l2': use one of visible, paper"):
        selector.select(images, latent, training, target, "l2")


def test_optional_widgets_default_to_what_the_function_does_without_them():
    """API prompts saved before an optional widget existed leave it out; ComfyUI then calls the function
    without it, so its parameter default must be the widget's default (what an old UI workflow shows)."""
    import inspect

    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        parameters = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for input_name, (kind, options) in cls.INPUT_TYPES().get("optional", {}).items():
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                assert parameters[input_name].default == options["default"], f"{name}.{input_name}"
            else:
                assert parameters[input_name].default is None, f"{name}.{input_name}"


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


def test_tuned_file_names_keep_unicode_and_refuse_what_file_systems_cannot_take():
    name = pack_module("nodes.model_nodes").tuned_file_name
    assert name("tuned-é名") == "tuned-é名.safetensors"
    assert name(" my run ") == "my run.safetensors"
    assert name("ok-name_1.2.safetensors") == "ok-name_1.2.safetensors"
    assert name("a" * 243) == "a" * 243 + ".safetensors"  # 255 bytes
    with pytest.raises(ValueError, match=r"'filename' is too long .* 300 characters take 300 bytes, and file systems "
                                         r"allow 243 plus '.safetensors'"):
        name("a" * 300)
    with pytest.raises(ValueError, match="100 characters take 300 bytes"):
        name("名" * 100)
    with pytest.raises(ValueError, match=r"'filename' contains '/', which file names cannot hold .* no folders"):
        name("../../etc/passwd")
    with pytest.raises(ValueError, match=r"contains ':' '\\\\'"):
        name("C:\\models\\x")
    with pytest.raises(ValueError, match="'filename' is empty"):
        name("  ")
    with pytest.raises(ValueError, match="hidden file"):
        name(".hidden")
    with pytest.raises(ValueError, match="device name on Windows"):
        name("con")
    save_tuned = load_pack().NODE_CLASS_MAPPINGS["PoseCrafterSaveTuned"]
    assert save_tuned.VALIDATE_INPUTS(filename="tuned-é名") is True and save_tuned.VALIDATE_INPUTS() is True
    assert save_tuned.VALIDATE_INPUTS(filename="x" * 300).startswith("'filename' is too long")


def test_sampler_explains_windows_that_never_move_before_any_work():
    sampler = node("PoseCrafterTemporalSampler")
    with pytest.raises(ValueError, match=r"^'context_overlap' \(3\) must be smaller than 'context_length' \(3\): "
                                         r"windows of 3 frames .* never move on. Set context_overlap to 2 or less"):
        sampler.sample(None, None, None, None, 4, 1.0, 1.0, 3, 3, True)
    with pytest.raises(ValueError, match=r"^'context_overlap' is -1: use 0"):
        sampler.sample(None, None, None, None, 4, 1.0, 1.0, 16, -1, True)


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
    linked = {"model": "POSECRAFTER_MODEL", "latent": "LATENT", "pose": "POSE_KEYPOINT", "positive": "CONDITIONING"}
    assert sampler.VALIDATE_INPUTS(linked, cfg=1.0, context_length=0, context_overlap=4) is True
    assert sampler.VALIDATE_INPUTS(linked, cfg=1.0, context_length=16, context_overlap=4) is True
    assert "must be smaller than 'context_length'" in sampler.VALIDATE_INPUTS(linked, context_length=4, context_overlap=4)
    assert sampler.VALIDATE_INPUTS(linked) is True  # linked values are unknown at validation time
    # cfg > 1 is refused at queue time when nothing is connected to 'negative', before tuning runs
    assert sampler.VALIDATE_INPUTS(linked, cfg=3.0).startswith("cfg > 1 needs a 'negative' conditioning")
    assert sampler.VALIDATE_INPUTS({**linked, "negative": "CONDITIONING"}, cfg=3.0) is True
    assert sampler.VALIDATE_INPUTS(linked, cfg=0.5) == "'cfg' is 0.5: use 1 to 30"  # ComfyUI's range check is ours
    # asking for input_types turns ComfyUI's link type check off for this node, so it is made here
    assert sampler.VALIDATE_INPUTS({**linked, "negative": "LATENT"}, cfg=3.0) == (
        "'negative' takes CONDITIONING, but a LATENT output is connected to it")

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
        # input_types: ComfyUI's extra argument, the types of the linked inputs
        declared = [a for a in inspect.getfullargspec(cls.VALIDATE_INPUTS).args if a not in ("cls", "input_types")]
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


def one_point_pose(x, y, width, height):
    """POSE_KEYPOINT with only the nose (drawn as a red disc, body colour 0) visible."""
    return [{"people": [{"pose_keypoints_2d": [x, y, 1.0] + [0.0] * 51}], "canvas_width": width,
             "canvas_height": height}]


def red_centre(images):
    """Centre (x, y) of the pure-red pixels of the first image [F,3,H,W]."""
    image = images[0].permute(1, 2, 0).numpy()
    ys, xs = np.nonzero((image[..., 0] > 0.99) & (image[..., 1] < 0.01) & (image[..., 2] < 0.01))
    return xs.mean(), ys.mean()


def test_poses_follow_the_crop_of_vae_encode_on_frames_not_a_multiple_of_8(caplog):
    common = pack_module("nodes.common")
    read = pack_module("posecrafter.pose").from_pose_keypoint
    latents = torch.zeros(1, 4, 11, 12)  # VAE Encode of a 100x90 frame: 96x88 pixels, 2 px off left, 1 off top
    with caplog.at_level("INFO", logger="PoseCrafter"):
        images = common.pose_images_for(read(one_point_pose(90.0, 80.0, 100, 90)), latents)
        common.pose_images_for(read(one_point_pose(20.0, 30.0, 100, 90)), latents)
    assert images.shape == (1, 3, 88, 96)
    assert red_centre(images) == (88.0, 79.0)  # frame pixel (90, 80) is pixel (88, 79) of the cropped frame
    crop_lines = [r.getMessage() for r in caplog.records if "not a multiple of 8" in r.getMessage()]
    assert len(crop_lines) == 1
    assert "100x90" in crop_lines[0] and "96x88" in crop_lines[0] and "2 px off the left, 2 off the right" in crop_lines[0]
    # a canvas of another size (poses of another video) is rescaled, not cropped
    rescaled = common.pose_images_for(read(one_point_pose(180.0, 160.0, 200, 180)), latents)
    assert red_centre(rescaled) == (86.0, 78.0)  # (86.4, 78.2)
    assert common.poses_for_latents(read(one_point_pose(10.0, 20.0, 96, 88)), 11, 12).points[0, 0].tolist() == [10, 20]


@pytest.mark.parametrize("pose", [
    "not poses",
    [{"people": 5, "canvas_width": 64, "canvas_height": 64}],
    [{"people": [{"pose_keypoints_2d": [1e300, 1.0, 1.0] + [0.0] * 51}], "canvas_width": 64, "canvas_height": 64}],
    [{"people": [{"pose_keypoints_2d": [float("nan"), 1.0, 1.0] + [0.0] * 51}], "canvas_width": 64,
      "canvas_height": 64}],
])
def test_bad_poses_reach_the_user_as_messages_naming_the_input(pose):
    with pytest.raises(ValueError, match=r"^pose"):
        node("PoseCrafterPoseRender").render(pose, 64, 64)
    with pytest.raises(ValueError, match=r"^target_pose"):
        node("PoseCrafterPoseInserter").insert(pose, synthetic_pose(1), 0)


@pytest.mark.parametrize("dtype, name", [(torch.bfloat16, "bf16"), (torch.float16, "fp16")])
def test_model_loader_warns_of_half_precision_on_a_cpu_without_its_instructions(monkeypatch, dtype, name):
    warning = pack_module("nodes.model_nodes").slow_half_precision_warning
    for flag in ("_is_mkldnn_bf16_supported", "_is_mkldnn_fp16_supported"):
        monkeypatch.setattr(torch.ops.mkldnn, flag, lambda: False)
    assert f"dtype {name} on this CPU, which has no {name} instructions" in warning(dtype, torch.device("cpu"))
    assert "set the Model Loader's dtype to fp32" in warning(dtype, torch.device("cpu"))
    assert warning(torch.float32, torch.device("cpu")) is None
    assert warning(dtype, torch.device("cuda")) is None
    for flag in ("_is_mkldnn_bf16_supported", "_is_mkldnn_fp16_supported"):
        monkeypatch.setattr(torch.ops.mkldnn, flag, lambda: True)
    assert warning(dtype, torch.device("cpu")) is None
