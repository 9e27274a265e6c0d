"""The video model: the inflated SD1.5 UNet + OpenPose ControlNet, and the conventions at its boundary.

Latent units (the one place this is decided): ComfyUI's LATENT holds raw VAE latents, while the UNet works
on ``latent * LATENT_SCALE``. Every public engine function (tuning, inversion, sampling) takes and returns
raw, ComfyUI-style latents ``[F, 4, h, w]`` and converts with :func:`to_model_space` /
:func:`to_latent_space` internally.

Other inputs: prompt embeddings ``[1, 77, 768]`` (ComfyUI's CLIPTextEncode output), and pose skeleton
images ``[F, 3, 8h, 8w]``, RGB in 0..1, one per latent frame.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn

from .attention import FrameLayout
from .inflation import inflate_controlnet, inflate_unet, is_trainable_name
from .loading import content_sha256, load_controlnet, load_unet

LATENT_SCALE = 0.18215  # SD1.5 VAE scaling factor (spec 0)


def to_model_space(latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents (ComfyUI LATENT) -> the UNet's scaled latents."""
    return latents * LATENT_SCALE


def to_latent_space(latents: torch.Tensor) -> torch.Tensor:
    """The UNet's scaled latents -> raw VAE latents (ComfyUI LATENT)."""
    return latents / LATENT_SCALE


class PoseCrafterModel(nn.Module):
    """The inflated UNet and ControlNet (spec 1), sharing one :class:`FrameLayout`.

    Precision: the frozen weights keep the dtype they were loaded in (fp32, fp16 or bf16) while the
    trainable set is always fp32, so tuning updates and tuned-weight files are exact; with half-precision
    frozen weights every forward pass runs under autocast in that dtype. Move the model with
    ``.to(device)`` only.

    ``checkpoint_path`` / ``controlnet_path`` identify the base weights; tuned weights record their content
    hashes so they are never applied to another base.
    """

    def __init__(self, unet: UNet2DConditionModel, controlnet: ControlNetModel,
                 checkpoint_path: str | os.PathLike | None = None, controlnet_path: str | os.PathLike | None = None):
        super().__init__()
        self.layout = FrameLayout()
        inflate_unet(unet, self.layout)
        inflate_controlnet(controlnet, self.layout)
        self.unet = unet
        self.controlnet = controlnet
        for param in self.trainable_parameters().values():
            param.data = param.data.float()
        self.eval().requires_grad_(False)  # the added attention layers too: the tuner turns gradients on
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.controlnet_path = Path(controlnet_path) if controlnet_path is not None else None

    @classmethod
    def from_files(cls, checkpoint_path, controlnet_path, dtype=torch.float32, device="cpu") -> "PoseCrafterModel":
        """Load an SD1.5 checkpoint (single file or diffusers folder) and an OpenPose ControlNet, then inflate."""
        unet = load_unet(checkpoint_path, dtype=dtype, device=device)
        controlnet = load_controlnet(controlnet_path, dtype=dtype, device=device)
        return cls(unet, controlnet, checkpoint_path, controlnet_path)

    @property
    def dtype(self) -> torch.dtype:
        """The frozen weights' dtype (the trainable set is fp32)."""
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def text_width(self) -> int:
        return self.unet.config.cross_attention_dim

    def base_identity(self) -> dict[str, str]:
        """Names and content hashes of the base checkpoint and ControlNet these weights came from."""
        if self.checkpoint_path is None or self.controlnet_path is None:
            raise ValueError("this model was not loaded from files, so its base cannot be identified; "
                             "load it with PoseCrafterModel.from_files")
        return {
            "base_name": self.checkpoint_path.name,
            "base_sha256": content_sha256(self.checkpoint_path, "unet"),
            "controlnet_name": self.controlnet_path.name,
            "controlnet_sha256": content_sha256(self.controlnet_path, "controlnet"),
        }

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """ControlVideo's trainable set (spec 2): 72,130,240 parameters for SD1.5, keyed ``unet.*`` / ``controlnet.*``."""
        return {name: p for name, p in self.named_parameters() if is_trainable_name(name.split(".", 1)[1])}

    def forward(self, latents: torch.Tensor, timestep, prompt_embeds: torch.Tensor, pose_images: torch.Tensor,
                num_frames: int, key_index: int = 0, controlnet_scale: float = 1.0) -> torch.Tensor:
        """Predict noise for ``B`` videos of ``num_frames`` frames folded into the batch.

        latents: ``[B*F, 4, h, w]`` in model space; prompt_embeds: ``[B, 77, D]``, one per video;
        pose_images: ``[B*F, 3, 8h, 8w]``. ControlNet residuals are scaled by ``controlnet_scale`` (spec 1.4).
        """
        self.layout.num_frames = num_frames
        self.layout.key_index = key_index
        dtype = self.dtype
        latents = latents.to(dtype)
        text = prompt_embeds.to(dtype)  # one per video: the attention processors share it across its frames
        # fp32 weights leave autocast as the caller set it (the tuner's fp16 autocast on a GPU).
        half = torch.autocast(self.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with half:
            down, mid = self.controlnet(
                latents, timestep, encoder_hidden_states=text, controlnet_cond=pose_images.to(dtype),
                conditioning_scale=controlnet_scale, return_dict=False,
            )
            return self.unet(
                latents, timestep, encoder_hidden_states=text,
                down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
            )[0]


def check_video_inputs(model: PoseCrafterModel, latents: torch.Tensor, pose_images: torch.Tensor,
                       prompt_embeds: torch.Tensor, key_index: int = 0) -> None:
    """Raise a ValueError naming the input and the fix when latents, poses or conditioning do not fit."""
    if latents.ndim != 4 or latents.shape[1] != 4:
        raise ValueError(f"latents must be [frames, 4, h, w] (a LATENT batch), got shape {tuple(latents.shape)}")
    frames = latents.shape[0]
    if frames == 0:
        raise ValueError("latents hold zero frames: pass at least one frame")
    if pose_images.ndim != 4 or pose_images.shape[1] != 3:
        raise ValueError(f"pose_images must be [frames, 3, H, W] RGB images, got shape {tuple(pose_images.shape)}")
    if pose_images.shape[0] != frames:
        raise ValueError(
            f"latents have {frames} frames but pose_images has {pose_images.shape[0]}: "
            "give exactly one pose image per latent frame"
        )
    height, width = pose_images.shape[-2:]
    if height % 8 or width % 8:
        raise ValueError(f"pose images are {width}x{height} pixels; width and height must be multiples of 8")
    if (height // 8, width // 8) != tuple(latents.shape[-2:]):
        raise ValueError(
            f"pose images are {width}x{height} pixels but the latents are for "
            f"{latents.shape[-1] * 8}x{latents.shape[-2] * 8}: render the poses at the latents' pixel size"
        )
    if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
        raise ValueError(f"prompt conditioning must be [1, 77, {model.text_width}], got {tuple(prompt_embeds.shape)}")
    if prompt_embeds.shape[-1] != model.text_width:
        raise ValueError(
            f"prompt conditioning is {prompt_embeds.shape[-1]} wide but the model needs {model.text_width} "
            "(SD1.5 uses the CLIP-L text encoder: encode the prompt with an SD1.5 CLIP, not SD2/SDXL)"
        )
    if not 0 <= key_index < frames:
        raise ValueError(f"key_index {key_index} is outside 0..{frames - 1}")
