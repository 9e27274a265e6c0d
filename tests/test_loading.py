"""Loading real checkpoint layouts (LDM single files, ControlNet v1.0/v1.1 files, diffusers folders), offline."""
import contextlib
import json
import re
from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from posecrafter import loading
from posecrafter.loading import content_sha256, load_controlnet, load_unet
from posecrafter.model import PoseCrafterModel
from tests.tiny_models import UNET_CONFIG, tiny_controlnet, tiny_unet, video_inputs

LAYERS = UNET_CONFIG["layers_per_block"]
RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
FIXED_NAMES = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "controlnet_mid_block": "middle_block_out.0", "controlnet_cond_embedding.conv_in": "input_hint_block.0",
               "controlnet_cond_embedding.conv_out": "input_hint_block.14"}


def _resnet(rest):
    head, tail = rest.split(".", 1)
    return f"{RESNET_NAMES[head]}.{tail}"


def ldm_name(name, up_blocks_with_attention=(1,), layers_per_block=LAYERS):
    """The original (LDM / ControlNet v1.1) name of a diffusers parameter: the tiny configs by default,
    SD1.5's with layers_per_block=2, up_blocks_with_attention=(1, 2, 3)."""
    n = layers_per_block
    for diffusers_prefix, ldm_prefix in FIXED_NAMES.items():
        if name.startswith(diffusers_prefix + "."):
            return ldm_prefix + name[len(diffusers_prefix):]
    rules = [
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", lambda i, j, r: f"input_blocks.{1 + i * (n + 1) + j}.0.{_resnet(r)}"),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", lambda i, j, r: f"input_blocks.{1 + i * (n + 1) + j}.1.{r}"),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", lambda i, r: f"input_blocks.{(i + 1) * (n + 1)}.0.op.{r}"),
        (r"mid_block\.resnets\.(\d+)\.(.*)", lambda j, r: f"middle_block.{2 * j}.{_resnet(r)}"),
        (r"mid_block\.attentions\.0\.(.*)", lambda r: f"middle_block.1.{r}"),
        (r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", lambda i, j, r: f"output_blocks.{i * (n + 1) + j}.0.{_resnet(r)}"),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", lambda i, j, r: f"output_blocks.{i * (n + 1) + j}.1.{r}"),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)",
         lambda i, r: f"output_blocks.{i * (n + 1) + n}.{2 if i in up_blocks_with_attention else 1}.conv.{r}"),
        (r"controlnet_down_blocks\.(\d+)\.(.*)", lambda i, r: f"zero_convs.{i}.0.{r}"),
        (r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", lambda b, r: f"input_hint_block.{2 * (b + 1)}.{r}"),
    ]
    for pattern, build in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return build(*[int(g) if g.isdigit() else g for g in match.groups()])
    raise KeyError(name)


def _config_dir(tmp_path, name, model):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(model.config)))
    return folder


@pytest.fixture
def tiny_files(tmp_path):
    unet, controlnet = tiny_unet(), tiny_controlnet()
    ldm = {"model.diffusion_model." + ldm_name(k): v for k, v in unet.state_dict().items()}
    ldm["first_stage_model.decoder.conv_in.weight"] = torch.zeros(2)  # a full checkpoint also holds VAE/CLIP
    save_file(ldm, tmp_path / "sd15_tiny.safetensors")
    control = {ldm_name(k): v for k, v in controlnet.state_dict().items()}
    save_file(control, tmp_path / "openpose_tiny_noprefix.safetensors")
    torch.save({"state_dict": {"control_model." + k: v for k, v in control.items()}}, tmp_path / "openpose_tiny.pth")
    return tmp_path, unet, controlnet, _config_dir(tmp_path, "unet_cfg", unet), _config_dir(tmp_path, "cn_cfg", controlnet)


@pytest.fixture
def tensors_read(monkeypatch):
    """The names of the tensors the loaders read from safetensors files."""
    names = []
    real_open = loading.safe_open

    @contextlib.contextmanager
    def recording_open(*args, **kwargs):
        with real_open(*args, **kwargs) as handle:
            def get_tensor(name):
                names.append(name)
                return handle.get_tensor(name)
            yield SimpleNamespace(keys=handle.keys, get_tensor=get_tensor)

    monkeypatch.setattr(loading, "safe_open", recording_open)
    return names


def _outputs(unet, controlnet):
    latents, poses, text = video_inputs(1, seed=3)
    z, t = latents * 0.18215, torch.tensor(321)
    with torch.no_grad():
        down, mid = controlnet(z, t, encoder_hidden_states=text, controlnet_cond=poses, return_dict=False)
        return unet(z, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample


def test_ldm_single_file_and_controlnet_files_load_strictly_and_reproduce_outputs(tiny_files):
    path, unet, controlnet, unet_cfg, cn_cfg = tiny_files
    loaded_unet = load_unet(path / "sd15_tiny.safetensors", config_dir=unet_cfg)
    expected = _outputs(unet, controlnet)
    for name in ("openpose_tiny_noprefix.safetensors", "openpose_tiny.pth"):
        loaded_controlnet = load_controlnet(path / name, config_dir=cn_cfg)
        assert torch.equal(_outputs(loaded_unet, loaded_controlnet), expected), name
    assert not any(p.requires_grad for p in loaded_unet.parameters())


def test_diffusers_folders_load_and_inflate(tiny_files, tmp_path):
    _, unet, controlnet, _, _ = tiny_files
    unet.save_pretrained(tmp_path / "pipeline" / "unet")
    controlnet.save_pretrained(tmp_path / "cn")
    model = PoseCrafterModel.from_files(tmp_path / "pipeline", tmp_path / "cn")
    latents, poses, text = video_inputs(1, seed=3)
    with torch.no_grad():
        ours = model(latents * 0.18215, torch.tensor(321), text, poses, num_frames=1)
    assert (ours - _outputs(unet, controlnet)).abs().max() <= 1e-5


def test_a_diffusers_unet_saved_as_one_file_loads(tiny_files):
    path, unet, controlnet, unet_cfg, _ = tiny_files
    save_file(unet.state_dict(), path / "unet_diffusers_layout.safetensors")
    loaded = load_unet(path / "unet_diffusers_layout.safetensors", config_dir=unet_cfg)
    assert torch.equal(_outputs(loaded, controlnet), _outputs(unet, controlnet))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_is_the_callers_choice(tiny_files, dtype):
    path, _, _, unet_cfg, _ = tiny_files
    assert load_unet(path / "sd15_tiny.safetensors", dtype=dtype, config_dir=unet_cfg).dtype == dtype


def test_sdxl_shaped_checkpoint_is_named_as_such(tmp_path):
    save_file({"model.diffusion_model.label_emb.0.0.weight": torch.zeros(4, 4),
               "conditioner.embedders.0.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77)},
              tmp_path / "sdxl.safetensors")
    with pytest.raises(ValueError, match="sdxl.safetensors looks like an SDXL checkpoint; PoseCrafter needs an SD1.5"):
        load_unet(tmp_path / "sdxl.safetensors")


def test_sd2_text_width_is_named(tmp_path):
    save_file({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 1024)},
              tmp_path / "sd21.safetensors")
    with pytest.raises(ValueError, match="SD2.x"):
        load_unet(tmp_path / "sd21.safetensors")


def test_truncated_files_fail_with_a_clear_message(tiny_files):
    path, _, _, unet_cfg, cn_cfg = tiny_files
    data = (path / "sd15_tiny.safetensors").read_bytes()
    (path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.safetensors is not a readable checkpoint"):
        load_unet(path / "cut.safetensors", config_dir=unet_cfg)
    # A file whose tensors are readable but incomplete is caught by the strict load.
    control = load_file(path / "openpose_tiny_noprefix.safetensors")
    control.pop("zero_convs.0.0.weight")
    save_file(control, path / "partial_control.safetensors")
    with pytest.raises(ValueError, match="partial_control.safetensors"):
        load_controlnet(path / "partial_control.safetensors", config_dir=cn_cfg)


def test_a_model_file_of_the_wrong_architecture_is_refused(tiny_files):
    path, _, _, _, _ = tiny_files
    with pytest.raises(ValueError, match="wrong shape|does not match"):  # tiny weights against the SD1.5 config
        load_unet(path / "sd15_tiny.safetensors")
    with pytest.raises(ValueError, match="looks like a ControlNet, not a base model"):
        load_unet(path / "openpose_tiny_noprefix.safetensors")
    with pytest.raises(ValueError, match="looks like a base model checkpoint, not a ControlNet"):
        load_controlnet(path / "sd15_tiny.safetensors")


def test_files_that_are_not_checkpoints_at_all(tmp_path):
    (tmp_path / "notes.safetensors").write_text("hello")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_unet(tmp_path / "notes.safetensors")
    torch.save({"step": 3, "note": "text"}, tmp_path / "junk.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_unet(tmp_path / "junk.ckpt")
    with pytest.raises(ValueError, match="does not exist"):
        load_controlnet(tmp_path / "missing.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        load_unet(tmp_path / "empty_dir")


def test_a_full_sd_checkpoint_reads_only_the_unet_tensors(tiny_files, tensors_read):
    path, unet, controlnet, unet_cfg, _ = tiny_files
    full = load_file(path / "sd15_tiny.safetensors")
    full["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.zeros(1, 77)
    full["model_ema.diffusion_modelout2weight"] = torch.zeros(4, 16, 3, 3)
    full["model_ema.decay"] = torch.tensor(0.9999)
    save_file(full, path / "v1-5-pruned.safetensors")
    loaded = load_unet(path / "v1-5-pruned.safetensors", config_dir=unet_cfg)
    assert torch.equal(_outputs(loaded, controlnet), _outputs(unet, controlnet))
    assert sorted(tensors_read) == sorted(k for k in full if k.startswith("model.diffusion_model."))


def test_a_controlnet_v10_file_uses_only_its_control_model_part(tiny_files, tensors_read):
    path, unet, controlnet, _, cn_cfg = tiny_files
    control = {"control_model." + k: v for k, v in load_file(path / "openpose_tiny_noprefix.safetensors").items()}
    control_ldm = {**load_file(path / "sd15_tiny.safetensors"), **control,
                   "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77)}
    torch.save(control_ldm, path / "control_sd15_openpose.pth")
    save_file(control_ldm, path / "control_sd15_openpose.safetensors")
    for name in ("control_sd15_openpose.pth", "control_sd15_openpose.safetensors"):
        loaded = load_controlnet(path / name, config_dir=cn_cfg)
        assert torch.equal(_outputs(unet, loaded), _outputs(unet, controlnet)), name
    assert sorted(tensors_read) == sorted(control)


def test_a_difference_controlnet_is_named(tiny_files):
    path, _, _, _, cn_cfg = tiny_files
    diff = {"control_model." + k: v for k, v in load_file(path / "openpose_tiny_noprefix.safetensors").items()}
    save_file({**diff, "difference": torch.tensor([1.0])}, path / "diff_control_sd15_openpose.safetensors")
    with pytest.raises(ValueError, match="diff_control_sd15_openpose.safetensors is a difference ControlNet.*"
                                         "merge it with SD1.5 first, or use the full OpenPose ControlNet"):
        load_controlnet(path / "diff_control_sd15_openpose.safetensors", config_dir=cn_cfg)


@pytest.mark.parametrize("channels, kind", [(9, "inpainting"), (8, "instruct-pix2pix")])
def test_inpainting_and_instruct_pix2pix_unets_are_named(tiny_files, channels, kind):
    path, _, _, unet_cfg, _ = tiny_files
    ldm = load_file(path / "sd15_tiny.safetensors")
    ldm["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(16, channels, 3, 3)
    save_file(ldm, path / "edit.safetensors")
    message = f"looks like an {kind} model \\({channels} input channels; text-to-image models have 4\\)"
    with pytest.raises(ValueError, match="edit.safetensors " + message):
        load_unet(path / "edit.safetensors", config_dir=unet_cfg)
    UNet2DConditionModel(**{**UNET_CONFIG, "in_channels": channels}).save_pretrained(path / "edit_folder" / "unet")
    with pytest.raises(ValueError, match="edit_folder " + message):
        load_unet(path / "edit_folder")


def test_sd3_checkpoint_with_the_ldm_prefix_is_named(tmp_path):
    save_file({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(6, 2)},
              tmp_path / "sd3_medium.safetensors")
    with pytest.raises(ValueError, match="sd3_medium.safetensors looks like a Flux or SD3 checkpoint"):
        load_unet(tmp_path / "sd3_medium.safetensors")


def test_diffusers_folders_with_the_fp16_variant_load_and_prefer_full_precision(tiny_files):
    path, unet, controlnet, _, _ = tiny_files
    unet.save_pretrained(path / "fp16_only" / "unet", variant="fp16")
    assert torch.equal(_outputs(load_unet(path / "fp16_only"), controlnet), _outputs(unet, controlnet))
    fp16_file = path / "fp16_only" / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    before = content_sha256(path / "fp16_only")
    other = tiny_unet(seed=5)
    save_file(other.state_dict(), fp16_file)
    assert content_sha256(path / "fp16_only") != before
    save_file(unet.state_dict(), fp16_file.with_name("diffusion_pytorch_model.safetensors"))
    assert torch.equal(_outputs(load_unet(path / "fp16_only"), controlnet), _outputs(unet, controlnet))
    # the identity covers the file that is loaded, not the unused fp16 variant or other parts of the pipeline
    identity = content_sha256(path / "fp16_only")
    save_file(tiny_unet(seed=6).state_dict(), fp16_file)
    (path / "fp16_only" / "vae").mkdir()
    save_file({"x": torch.zeros(1)}, path / "fp16_only" / "vae" / "diffusion_pytorch_model.safetensors")
    assert content_sha256(path / "fp16_only") == identity


def test_upper_case_extensions_are_read_as_safetensors(tiny_files):
    path, unet, controlnet, unet_cfg, _ = tiny_files
    (path / "SD15_TINY.SAFETENSORS").write_bytes((path / "sd15_tiny.safetensors").read_bytes())
    loaded = load_unet(path / "SD15_TINY.SAFETENSORS", config_dir=unet_cfg)
    assert torch.equal(_outputs(loaded, controlnet), _outputs(unet, controlnet))
