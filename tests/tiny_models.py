"""Tiny diffusers models with SD1.5's structure, built by the tests (no weights are ever downloaded)."""
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

from posecrafter.pose import NUM_POINTS, PoseSequence

TEXT_WIDTH = 32

UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_WIDTH, attention_head_dim=2, norm_num_groups=8,
)
CONTROLNET_CONFIG = dict(
    in_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=TEXT_WIDTH,
    attention_head_dim=2, norm_num_groups=8, conditioning_embedding_out_channels=(4, 8, 8, 16),
)


def tiny_unet(seed=0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    _randomize_zero_params(unet, seed)
    return unet


def tiny_controlnet(seed=1) -> ControlNetModel:
    torch.manual_seed(seed)
    controlnet = ControlNetModel(**CONTROLNET_CONFIG).eval()
    _randomize_zero_params(controlnet, seed)
    return controlnet


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(2)
    return AutoencoderKL(
        block_out_channels=(4, 4, 4, 4), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4, layers_per_block=1,
    ).eval()


def _randomize_zero_params(model, seed):
    """ControlNet zero convs and UNet output convs start at zero; give them values so tests see their effect."""
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def randomize_temporal(model, seed=3):
    """Give the zero-initialised conv_temp layers non-zero weights, so temporal attention matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".conv_temp." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def video_inputs(frames, seed=0, height=8, width=8):
    """Raw (ComfyUI-style) latents, pose images and one prompt embedding for a tiny video."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(frames, 4, height, width, generator=generator) * 5
    poses = torch.rand(frames, 3, height * 8, width * 8, generator=generator)
    text = torch.randn(1, 77, TEXT_WIDTH, generator=generator)
    return latents, poses, text


def random_poses(frames, width, height, seed=0):
    """A PoseSequence of every body, face and hand point visible at random places on a width x height canvas."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0.1, 0.9, (frames, NUM_POINTS, 2)) * [width, height]
    return PoseSequence(points, np.ones((frames, NUM_POINTS)), width, height)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_embedder(seed=0):
    """A tiny CLIP vision tower with its projection (random weights), as an embed_images callable:
    IMAGE [B,H,W,3] -> resized to 32x32, CLIP-normalised -> projected image embeddings [B, 16]."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=16)
    model = CLIPVisionModelWithProjection(config).eval()
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def embed_images(images):
        pixels = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=(32, 32), mode="bilinear")
        return model(pixel_values=(pixels - mean) / std).image_embeds

    return embed_images


class TinyClipVision:
    """The tiny CLIP behind the interface of ComfyUI's CLIP_VISION (comfy/clip_vision.py ClipVisionModel):
    image_mean, and encode_image(IMAGE, crop=True) returning an object whose image_embeds are [B, D]."""

    def __init__(self, image_mean=CLIP_MEAN):
        self.image_mean = list(image_mean)
        self._embed = tiny_clip_embedder()

    def encode_image(self, image, crop=True):
        return SimpleNamespace(image_embeds=self._embed(image))
