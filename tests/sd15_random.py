"""Full-size SD1.5 model files with random weights, for running the workflows in a real ComfyUI offline.

ComfyUI's loaders recognise a model by its tensor names and shapes, so tiny models do not do for
CheckpointLoaderSimple (SD1.5: model_channels 320, context_dim 768) or for its CLIP and VAE. These files
have the real architectures and layouts and random values:
- an SD1.5 single-file checkpoint: UNet in the original LDM names (``model.diffusion_model.``), CLIP-L
  text encoder (``cond_stage_model.transformer.``), VAE (``first_stage_model.``, diffusers names: ComfyUI
  converts them on load);
- an OpenPose ControlNet v1.1 file (LDM names, no ``control_model.`` prefix, like the fp16 release);
- a VAE file (diffusers names).
Weights are drawn directly in fp16 (no module initialisation), which takes seconds, and the files take
about 3 GB. Nothing is ever downloaded.
"""
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.test_loading import ldm_name

CONFIG_DIR = Path(__file__).resolve().parent.parent / "posecrafter" / "configs"
SD15_LDM = dict(layers_per_block=2, up_blocks_with_attention=(1, 2, 3))
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
CLIP_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)


def random_state_dict(module, generator, dtype=torch.float16):
    """Random values for every floating tensor of a module built on the meta device: norm scales 1,
    biases 0, matrices and kernels N(0, 1/fan_in) so activations keep their scale."""
    state = {}
    for name, meta in module.state_dict().items():
        if not meta.is_floating_point():
            continue
        if meta.ndim <= 1:
            value = torch.ones(meta.shape) if name.endswith("weight") else torch.zeros(meta.shape)
        else:
            fan_in = math.prod(meta.shape[1:])
            value = torch.randn(meta.shape, generator=generator) / math.sqrt(fan_in)
        state[name] = value.to(dtype)
    return state


def _on_meta(build):
    with torch.device("meta"):
        return build()


def write_sd15_files(checkpoint, controlnet, vae, seed=0):
    """Write the three files (any of them may be None to skip it)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    generator = torch.Generator().manual_seed(seed)
    vae_state = random_state_dict(_on_meta(lambda: AutoencoderKL(**VAE_CONFIG)), generator)
    if checkpoint is not None:
        unet = _on_meta(lambda: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIG_DIR / "sd15_unet")))
        state = {"model.diffusion_model." + ldm_name(k, **SD15_LDM): v for k, v in random_state_dict(unet, generator).items()}
        del unet
        clip = _on_meta(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)))
        state.update({"cond_stage_model.transformer." + k: v for k, v in random_state_dict(clip, generator).items()})
        state.update({"first_stage_model." + k: v for k, v in vae_state.items()})
        save_file(state, str(checkpoint))
        del state
    if controlnet is not None:
        model = _on_meta(lambda: ControlNetModel.from_config(ControlNetModel.load_config(CONFIG_DIR / "openpose_controlnet")))
        save_file({ldm_name(k, **SD15_LDM): v for k, v in random_state_dict(model, generator).items()}, str(controlnet))
    if vae is not None:
        save_file(vae_state, str(vae))


# CLIP ViT-L/14 vision tower with its projection, the smallest CLIP that ComfyUI's CLIP Vision Loader
# recognises (comfy/clip_vision.py picks a config by layer count: 24 layers is ViT-L). About 0.6 GB in fp16.
CLIP_VISION_VITL = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=768, hidden_act="quick_gelu",
)


def write_clip_vision_file(path, seed=0):
    """A CLIP ViT-L/14 vision file (transformers names, as ComfyUI loads them) with random weights."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model = _on_meta(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VISION_VITL)))
    save_file(random_state_dict(model, torch.Generator().manual_seed(seed)), str(path))
