"""Key-frame attention and temporal attention (spec 1.2, 1.3), on diffusers' attention modules.

Inside the UNet and the ControlNet the frames of each video are folded into the batch, ``(B*F, ...)``.
A :class:`FrameLayout` shared by every inflated module says how many frames each video has and which
frame is the key frame; :class:`~posecrafter.model.PoseCrafterModel` sets it before every forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn


@dataclass
class FrameLayout:
    """Frames per video in the current forward pass, and the key frame's index within each video."""

    num_frames: int = 1
    key_index: int = 0


class KeyFrameAttnProcessor:
    """Key-frame attention (spec 1.2): every frame's queries attend to the key frame's keys and values.

    ``Out_i = softmax(Q_i K_k^T / sqrt(d)) V_k`` with ``K_k = W_K z_k`` and ``V_k = W_V z_k``. K and V are
    projected once, from the key frame's tokens only, and all frames' queries of a video attend to them in
    one scaled-dot-product call. With one frame this is ordinary self-attention.
    """

    def __init__(self, layout: FrameLayout):
        self.layout = layout

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
        frames, heads = self.layout.num_frames, attn.heads
        key_tokens = rearrange(hidden_states, "(b f) s c -> b f s c", f=frames)[:, self.layout.key_index]

        # All F*S queries of a video share the key frame's S keys and values.
        query = rearrange(attn.to_q(hidden_states), "(b f) s (h d) -> b h (f s) d", f=frames, h=heads)
        key = rearrange(attn.to_k(key_tokens), "b s (h d) -> b h s d", h=heads)
        value = rearrange(attn.to_v(key_tokens), "b s (h d) -> b h s d", h=heads)
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        out = rearrange(out, "b h (f s) d -> (b f) s (h d)", f=frames).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class TemporalAttentionHook:
    """Temporal attention (spec 1.3), the parallel branch of a transformer block.

    Registered as a forward hook on the block's ``attn1``, it adds ``conv_temp(attn_temp(n))`` to attn1's
    output, where ``n`` is attn1's input (the block's ``norm1`` output). That is exactly ControlVideo's
    ``h + KeyFrameAttn(n) + Temporal(n)``. ``attn_temp`` is self-attention over the frame axis of each
    spatial token (no positional encoding); ``conv_temp`` is a zero-initialised 1x1 conv.
    """

    def __init__(self, block: BasicTransformerBlock, layout: FrameLayout):
        self.block = block
        self.layout = layout

    def __call__(self, attn1: Attention, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        normed = args[0] if args else kwargs["hidden_states"]
        frames, tokens = self.layout.num_frames, normed.shape[1]
        # Attend along the frames of each spatial position.
        attended = self.block.attn_temp(rearrange(normed, "(b f) s c -> (b s) f c", f=frames))
        attended = rearrange(attended, "(b s) f c -> (b f) s c", s=tokens)
        conv = self.block.conv_temp  # a 1x1 conv over channels is a linear map per token
        return output + F.linear(attended, conv.weight.flatten(1), conv.bias)


def add_temporal_attention(block: BasicTransformerBlock, layout: FrameLayout) -> None:
    """Give ``block`` ControlVideo's ``attn_temp`` (copied from attn1) and zero ``conv_temp``, and hook them in."""
    attn1 = block.attn1
    channels = attn1.query_dim
    weight = attn1.to_q.weight
    with torch.device(weight.device):
        attn_temp = Attention(
            query_dim=channels, heads=attn1.heads, dim_head=channels // attn1.heads, bias=False, out_bias=True
        ).to(weight.dtype)
        conv_temp = nn.Conv2d(channels, channels, kernel_size=1).to(weight.dtype)
    attn_temp.load_state_dict(
        {k: v for k, v in attn1.state_dict().items() if k.split(".")[0] in ("to_q", "to_k", "to_v", "to_out")}
    )
    nn.init.zeros_(conv_temp.weight)
    nn.init.zeros_(conv_temp.bias)
    block.attn_temp = attn_temp
    block.conv_temp = conv_temp
    attn1.register_forward_hook(TemporalAttentionHook(block, layout), with_kwargs=True)


def use_key_frame_attention(block: BasicTransformerBlock, layout: FrameLayout) -> None:
    """Replace the block's self-attention (attn1) processor by key-frame attention."""
    attn1 = block.attn1
    if attn1.is_cross_attention or attn1.norm_q is not None or attn1.residual_connection or attn1.group_norm is not None:
        raise ValueError("key-frame attention expects SD1.5-style self-attention blocks; this model differs")
    attn1.set_processor(KeyFrameAttnProcessor(layout))
