"""Inflation (spec 1): key-frame attention, temporal attention, frame-joint GroupNorms, trainable set."""
import copy

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D

from posecrafter.attention import FrameLayout, KeyFrameAttnProcessor, PromptAttnProcessor, TemporalAttnProcessor
from posecrafter.inflation import FrameJointGroupNorm, is_added_name
from posecrafter.loading import OPENPOSE_CONTROLNET_CONFIG, SD15_UNET_CONFIG
from posecrafter.model import PoseCrafterModel, to_model_space
from tests.tiny_models import randomize_temporal, tiny_controlnet, tiny_unet, video_inputs


def _attention(seed=0):
    torch.manual_seed(seed)
    return Attention(query_dim=32, heads=4, dim_head=8, bias=False, out_bias=True).eval()


def test_key_frame_attention_with_one_frame_is_stock_self_attention():
    attn = _attention()
    x = torch.randn(3, 20, 32)  # three single-frame videos
    with torch.no_grad():
        stock = attn(x)
        attn.set_processor(KeyFrameAttnProcessor(FrameLayout(num_frames=1)))
        ours = attn(x)
    assert (ours - stock).abs().max() <= 1e-5


@pytest.mark.parametrize("key_index", [0, 2])
def test_key_frame_attention_uses_only_the_key_frames_keys_and_values(key_index):
    attn = _attention()
    frames, tokens = 4, 6
    x = torch.randn(2 * frames, tokens, 32)
    attn.set_processor(KeyFrameAttnProcessor(FrameLayout(num_frames=frames, key_index=key_index)))
    with torch.no_grad():
        ours = attn(x)
        video = x.view(2, frames, tokens, 32)
        expected = []
        for b in range(2):
            key_frame = video[b, key_index]
            k = attn.to_k(key_frame).view(tokens, 4, 8).transpose(0, 1)
            v = attn.to_v(key_frame).view(tokens, 4, 8).transpose(0, 1)
            for f in range(frames):
                q = attn.to_q(video[b, f]).view(tokens, 4, 8).transpose(0, 1)
                weights = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1)
                expected.append(attn.to_out[0]((weights @ v).transpose(0, 1).reshape(tokens, 32)))
        expected = torch.stack(expected)
    assert (ours - expected).abs().max() <= 1e-5


def test_prompt_attention_is_stock_cross_attention_frame_by_frame():
    torch.manual_seed(2)
    attn = Attention(query_dim=32, cross_attention_dim=12, heads=4, dim_head=8, bias=False, out_bias=True).eval()
    videos, frames, tokens = 2, 3, 6
    x, prompts = torch.randn(videos * frames, tokens, 32), torch.randn(videos, 7, 12)  # a prompt per video
    with torch.no_grad():
        stock = attn(x, encoder_hidden_states=prompts.repeat_interleave(frames, dim=0))
        attn.set_processor(PromptAttnProcessor(FrameLayout(num_frames=frames)))
        ours = attn(x, encoder_hidden_states=prompts)
        with pytest.raises(ValueError, match="one prompt embedding per video, not one per frame"):
            attn(x, encoder_hidden_states=prompts.repeat_interleave(frames, dim=0))
    assert (ours - stock).abs().max() <= 1e-5


def test_temporal_attention_is_stock_self_attention_along_each_positions_frames():
    attn = _attention(seed=1)
    videos, frames, tokens = 2, 5, 6
    x = torch.randn(videos * frames, tokens, 32)
    with torch.no_grad():
        # the reference: each spatial position's frames as one sequence, through diffusers' own processor
        sequences = x.view(videos, frames, tokens, 32).transpose(1, 2).reshape(videos * tokens, frames, 32)
        stock = attn(sequences).view(videos, tokens, frames, 32).transpose(1, 2).reshape(videos * frames, tokens, 32)
        attn.set_processor(TemporalAttnProcessor(FrameLayout(num_frames=frames)))
        ours = attn(x)
    assert (ours - stock).abs().max() <= 1e-5


def test_frame_joint_group_norm_matches_direct_statistics_over_frames():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    videos, frames = 2, 3
    joint = FrameJointGroupNorm(norm, FrameLayout(num_frames=frames))
    x = torch.randn(videos * frames, 8, 5, 6) * 3 + torch.arange(videos * frames).view(-1, 1, 1, 1)
    grouped = x.view(videos, frames, 4, 2, 5, 6)
    mean = grouped.mean(dim=(1, 3, 4, 5), keepdim=True)
    var = grouped.var(dim=(1, 3, 4, 5), unbiased=False, keepdim=True)
    direct = ((grouped - mean) / torch.sqrt(var + norm.eps)).view(videos * frames, 8, 5, 6)
    direct = direct * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    with torch.no_grad():
        ours = joint(x)
        per_frame = norm(x)
    assert (ours - direct).abs().max() <= 1e-5
    assert (ours - per_frame).abs().max() > 1e-2  # per-frame statistics would be a different model


def _stock_and_inflated(temporal_seed=None):
    unet, controlnet = tiny_unet(), tiny_controlnet()
    stock_unet, stock_controlnet = copy.deepcopy(unet), copy.deepcopy(controlnet)
    model = PoseCrafterModel(unet, controlnet)
    if temporal_seed is not None:
        randomize_temporal(model, temporal_seed)
    return stock_unet, stock_controlnet, model


def test_inflated_models_at_init_with_one_frame_equal_the_stock_models():
    stock_unet, stock_controlnet, model = _stock_and_inflated()
    latents, poses, text = video_inputs(1)
    z = to_model_space(latents)
    t = torch.tensor(500)
    with torch.no_grad():
        down, mid = stock_controlnet(z, t, encoder_hidden_states=text, controlnet_cond=poses, return_dict=False)
        ours_down, ours_mid = model.controlnet(z, t, encoder_hidden_states=text, controlnet_cond=poses, return_dict=False)
        stock = stock_unet(z, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                           mid_block_additional_residual=mid).sample
        ours = model(z, t, text, poses, num_frames=1)
    for a, b in zip([*ours_down, ours_mid], [*down, mid]):
        assert (a - b).abs().max() <= 1e-5
    assert (ours - stock).abs().max() <= 1e-5


def test_identical_frames_give_the_single_frame_output_even_with_temporal_weights():
    _, _, model = _stock_and_inflated(temporal_seed=5)
    latents, poses, text = video_inputs(1)
    z = to_model_space(latents)
    with torch.no_grad():
        single = model(z, torch.tensor(300), text, poses, num_frames=1)
        video = model(z.repeat(5, 1, 1, 1), torch.tensor(300), text, poses.repeat(5, 1, 1, 1), num_frames=5)
    assert (video - single).abs().max() <= 1e-4


def test_frames_interact_through_temporal_attention_and_joint_norms():
    _, _, model = _stock_and_inflated(temporal_seed=5)
    latents, poses, text = video_inputs(3)
    z = to_model_space(latents)
    with torch.no_grad():
        video = model(z, torch.tensor(300), text, poses, num_frames=3)
        alone = model(z[1:2], torch.tensor(300), text, poses[1:2], num_frames=1)
    assert (video[1:2] - alone).abs().max() > 1e-3


def test_temporal_attention_is_permutation_equivariant_for_non_key_frames():
    _, _, model = _stock_and_inflated(temporal_seed=5)
    latents, poses, text = video_inputs(4)
    z = to_model_space(latents)
    order = torch.tensor([0, 3, 1, 2])  # the key frame stays first
    with torch.no_grad():
        out = model(z, torch.tensor(700), text, poses, num_frames=4)
        permuted = model(z[order], torch.tensor(700), text, poses[order], num_frames=4)
    assert (permuted - out[order]).abs().max() <= 1e-4


def test_every_block_is_inflated_as_the_spec_says():
    """Spec 1.1-1.4: key-frame attention in every transformer block of both models, frame-joint norms in every
    ResNet block of both and at the UNet's output, temporal attention in the UNet's 15 non-mid blocks only."""
    _, _, model = _stock_and_inflated()
    for net in (model.unet, model.controlnet):
        blocks = [m for m in net.modules() if isinstance(m, BasicTransformerBlock)]
        assert blocks and all(isinstance(b.attn1.processor, KeyFrameAttnProcessor) for b in blocks)
        resnets = [m for m in net.modules() if isinstance(m, ResnetBlock2D)]
        assert resnets and all(isinstance(r.norm1, FrameJointGroupNorm) and isinstance(r.norm2, FrameJointGroupNorm)
                               for r in resnets)
    assert isinstance(model.unet.conv_norm_out, FrameJointGroupNorm)
    temporal = [m for m in model.unet.modules() if hasattr(m, "attn_temp")]
    mid = set(model.unet.mid_block.modules())
    assert temporal and not any(m in mid for m in temporal)
    assert not any(hasattr(m, "attn_temp") for m in model.controlnet.modules())


def test_two_videos_in_one_batch_equal_each_video_alone():
    """Classifier-free guidance runs the negative and positive video as one batch: frames of one video must
    never mix with the other's (text, key frame, temporal attention, joint norms)."""
    _, _, model = _stock_and_inflated(temporal_seed=5)
    first, poses, text = video_inputs(3, seed=1)
    second, _, other_text = video_inputs(3, seed=2)
    z = to_model_space(torch.cat([first, second]))
    t = torch.tensor(600)
    with torch.no_grad():
        both = model(z, t, torch.cat([text, other_text]), torch.cat([poses, poses]), num_frames=3, key_index=1)
        alone = [model(z[:3], t, text, poses, num_frames=3, key_index=1),
                 model(z[3:], t, other_text, poses, num_frames=3, key_index=1)]
    assert (both - torch.cat(alone)).abs().max() <= 1e-4


def test_full_sd15_trainable_and_added_parameter_counts():
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(SD15_UNET_CONFIG)))
        controlnet = ControlNetModel.from_config(ControlNetModel.load_config(str(OPENPOSE_CONTROLNET_CONFIG)))
    model = PoseCrafterModel(unet, controlnet)
    trainable = model.trainable_parameters()
    assert sum(p.numel() for p in trainable.values()) == 72_130_240
    added = sum(p.numel() for name, p in model.named_parameters() if is_added_name(name))
    assert added == 53_782_400
    temporal_blocks = {name.split(".attn_temp.")[0] for name in trainable if ".attn_temp." in name}
    assert len(temporal_blocks) == 15 and not any(name.startswith("unet.mid_block") for name in temporal_blocks)
    assert sum(p.numel() for n, p in trainable.items() if n.startswith("controlnet.")) == 5_944_960
