"""Inflating the SD1.5 UNet and ControlNet for video (spec 1), as ControlVideo does.

- key-frame attention in every transformer block of both models (spec 1.2, 1.4), and prompt attention that
  projects the prompt once per video;
- temporal attention in the 15 UNet transformer blocks outside the mid block (spec 1.3);
- ResNet-block GroupNorms (and the UNet's final norm) with statistics over all frames of a video (spec 1.1).

Everything else (convs, the transformer's own input norm) runs per frame on the
``(B*F, ...)`` batch. The models are changed in place; their state-dict names stay diffusers' own, plus
ControlVideo's ``attn_temp`` / ``conv_temp`` inside each temporal block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from einops import rearrange
from torch import nn

from .attention import FrameLayout, add_temporal_attention, use_video_attention

# Spec 2.1: ControlVideo's trainable set, by parameter-name fragment, in both the UNet and the ControlNet.
TRAINABLE_NAME_PARTS = (".attn1.to_out.", ".attn_temp.", ".conv_temp.")


class FrameJointGroupNorm(nn.GroupNorm):
    """A GroupNorm whose statistics cover all frames of a video: the official model applies the ResNet
    GroupNorms to ``[B, C, F, h, w]``, so mean and variance run over (C/groups, F, h, w) per video."""

    def __init__(self, norm: nn.GroupNorm, layout: FrameLayout):
        super().__init__(norm.num_groups, norm.num_channels, norm.eps, norm.affine, device="meta")
        self.weight, self.bias = norm.weight, norm.bias
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        video = rearrange(x, "(b f) c h w -> b c f h w", f=self.layout.num_frames)
        out = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)
        return rearrange(out, "b c f h w -> (b f) c h w")


def _joint_resnet_norms(model: nn.Module, layout: FrameLayout) -> None:
    for module in model.modules():
        if isinstance(module, ResnetBlock2D):
            module.norm1 = FrameJointGroupNorm(module.norm1, layout)
            module.norm2 = FrameJointGroupNorm(module.norm2, layout)


def _transformer_blocks(model: nn.Module, exclude: nn.Module | None = None):
    excluded = set(exclude.modules()) if exclude is not None else set()
    return [m for m in model.modules() if isinstance(m, BasicTransformerBlock) and m not in excluded]


def inflate_unet(unet: UNet2DConditionModel, layout: FrameLayout) -> None:
    """Key-frame attention everywhere, temporal attention outside the mid block, frame-joint ResNet norms."""
    for block in _transformer_blocks(unet):
        use_video_attention(block, layout)
    for block in _transformer_blocks(unet, exclude=unet.mid_block):
        add_temporal_attention(block, layout)
    _joint_resnet_norms(unet, layout)
    unet.conv_norm_out = FrameJointGroupNorm(unet.conv_norm_out, layout)


def inflate_controlnet(controlnet: ControlNetModel, layout: FrameLayout) -> None:
    """Key-frame attention in every block and frame-joint ResNet norms; no temporal attention (spec 1.4)."""
    for block in _transformer_blocks(controlnet):
        use_video_attention(block, layout)
    _joint_resnet_norms(controlnet, layout)


def is_trainable_name(name: str) -> bool:
    """Whether a parameter (named from the UNet or ControlNet root) is in ControlVideo's trainable set."""
    return any(part in "." + name for part in TRAINABLE_NAME_PARTS)


def is_added_name(name: str) -> bool:
    """Whether a parameter was added by inflation (temporal attention and its zero conv)."""
    return ".attn_temp." in "." + name or ".conv_temp." in "." + name
