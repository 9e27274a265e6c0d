"""Key-frame attention, temporal attention (spec 1.2, 1.3) and per-video prompt attention, on diffusers'
attention modules.

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


def attend_per_video(attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
    """All ``F*S`` queries of each video attend to that video's one set of context tokens.

    hidden_states: ``(B*F, S, C)``; context: ``(B, S', C')``, one per video. K and V are projected once per
    video, and one scaled-dot-product call covers all its frames' queries.
    """
    heads = attn.heads
    query = rearrange(attn.to_q(hidden_states), "(b f) s (h d) -> b h (f s) d", f=frames, h=heads)
    key = rearrange(attn.to_k(context), "b s (h d) -> b h s d", h=heads)
    value = rearrange(attn.to_v(context), "b s (h d) -> b h s d", h=heads)
    out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
    out = rearrange(out, "b h (f s) d -> (b f) s (h d)", f=frames).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](out))


class KeyFrameAttnProcessor:
    """Key-frame attention (spec 1.2): every frame's queries attend to the key frame's keys and values.

    ``Out_i = softmax(Q_i K_k^T / sqrt(d)) V_k`` with ``K_k = W_K z_k`` and ``V_k = W_V z_k``: K and V come
    from the key frame's tokens only. With one frame this is ordinary self-attention.
    """

    def __init__(self, layout: FrameLayout):
        self.layout = layout

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
        frames = self.layout.num_frames
        key_frame = rearrange(hidden_states, "(b f) s c -> b f s c", f=frames)[:, self.layout.key_index]
        return attend_per_video(attn, hidden_states, key_frame, frames)


class PromptAttnProcessor:
    """Cross-attention to the prompt, which is the same for every frame of a video: the models get one
    prompt embedding per video, ``(B, 77, D)``, and its keys and values are projected once for all frames.
    This is SD1.5's own cross-attention, frame by frame; with one frame it is exactly that.
    """

    def __init__(self, layout: FrameLayout):
        self.layout = layout

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
        frames = self.layout.num_frames
        if encoder_hidden_states.shape[0] * frames != hidden_states.shape[0]:
            raise ValueError(
                f"prompt embeddings for {encoder_hidden_states.shape[0]} videos but {hidden_states.shape[0]} frames "
                f"of {frames}-frame videos: pass one prompt embedding per video, not one per frame")
        return attend_per_video(attn, hidden_states, encoder_hidden_states, frames)


class TemporalAttnProcessor:
    """Temporal attention (spec 1.3), ``attn_temp``'s processor: self-attention over the frame axis of each
    spatial token (no positional encoding), ``softmax(Q_t K_t^T / sqrt(d)) V_t`` per token position.

    It takes the blocks' own ``(B*F, S, C)`` layout: Q, K and V are projected per token there (plain matrix
    products), and only the attention itself regroups the frames of each position, ``(B*S, heads, F, d)``.
    """

    def __init__(self, layout: FrameLayout):
        self.layout = layout

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
        frames, heads, tokens = self.layout.num_frames, attn.heads, hidden_states.shape[1]
        query, key, value = (rearrange(project(hidden_states), "(b f) s (h d) -> (b s) h f d", f=frames, h=heads)
                             for project in (attn.to_q, attn.to_k, attn.to_v))
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        out = rearrange(out, "(b s) h f d -> (b f) s (h d)", s=tokens).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class TemporalAttentionHook:
    """The temporal attention branch of a transformer block (spec 1.3).

    Registered as a forward hook on the block's ``attn1``, it adds ``conv_temp(attn_temp(n))`` to attn1's
    output, where ``n`` is attn1's input (the block's ``norm1`` output). That is exactly ControlVideo's
    ``h + KeyFrameAttn(n) + Temporal(n)``; ``conv_temp`` is a zero-initialised 1x1 conv.
    """

    def __init__(self, block: BasicTransformerBlock):
        self.block = block

    def __call__(self, attn1: Attention, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        normed = args[0] if args else kwargs["hidden_states"]
        attended = self.block.attn_temp(normed)
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
    attn_temp.set_processor(TemporalAttnProcessor(layout))
    nn.init.zeros_(conv_temp.weight)
    nn.init.zeros_(conv_temp.bias)
    block.attn_temp = attn_temp
    block.conv_temp = conv_temp
    attn1.register_forward_hook(TemporalAttentionHook(block), with_kwargs=True)


def use_video_attention(block: BasicTransformerBlock, layout: FrameLayout) -> None:
    """Key-frame attention for the block's self-attention (attn1) and per-video prompt attention for its
    cross-attention (attn2)."""
    attn1, attn2 = block.attn1, block.attn2
    plain = attn2 is not None and all(
        a.norm_q is None and not a.residual_connection and a.group_norm is None for a in (attn1, attn2))
    if not plain or attn1.is_cross_attention or not attn2.is_cross_attention:
        raise ValueError("video attention expects SD1.5-style transformer blocks (self- then cross-attention); "
                         "this model differs: load an SD1.5 checkpoint")
    attn1.set_processor(KeyFrameAttnProcessor(layout))
    attn2.set_processor(PromptAttnProcessor(layout))
