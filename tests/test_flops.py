"""benchmarks/flops.py on the tiny models: every part of the difference between our sampler's and diffusers'
FLOPs is exactly what the inflation adds or saves, so a missing temporal branch or a changed attention
pattern changes the figures."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmarks import flops
from posecrafter import memory
from tests.tiny_models import CONTROLNET_CONFIG, TEXT_WIDTH, UNET_CONFIG

FRAMES = 4
SIZE = 64  # 8x8 latents

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def counted():
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = memory.fake_model(UNET_CONFIG, CONTROLNET_CONFIG, torch.float32, fake_mode)
    stock = memory.fake_stock_models(UNET_CONFIG, CONTROLNET_CONFIG, torch.float32, fake_mode)
    return flops.sampling(stock, model, FRAMES, SIZE, SIZE, fake_mode)


def test_each_part_of_the_difference_is_what_inflation_changes(counted):
    """The tiny models attend at 16 channels on the 8x8 latents (S = 64 tokens; UNet: 1 down and 2 up
    transformer blocks, all with temporal attention; ControlNet: 1) and at 32 channels on 4x4 in both mid
    blocks (no temporal attention). FLOPs below are over the F frames of one step, 2 per multiply-add."""
    f, s, c = FRAMES, 64, 16
    # Per temporal block: q, k, v, out and conv_temp projections of every token; attention of each token
    # position over the F frames (Q K^T and attention x V).
    temporal = 3 * (5 * 2 * f * s * c * c + 2 * 2 * s * f * f * c)
    # Keys and values of attn1 (diffusers: every frame's own; ours: the key frame's, once per video).
    own_keys_values = 2 * 2 * f * (4 * s * c * c + 2 * 16 * 32 * 32)
    # Keys and values of the 77 prompt tokens in attn2 (diffusers: per image; ours: once per video).
    prompt_keys_values = 2 * 2 * f * 77 * TEXT_WIDTH * (4 * 16 + 2 * 32)
    parts = counted["parts"]
    assert parts["temporal"] == {"posecrafter": temporal, "diffusers": 0, "difference": temporal}
    assert parts["key_frame"]["diffusers"] == own_keys_values
    assert parts["key_frame"]["posecrafter"] == own_keys_values // f
    assert parts["prompt"]["diffusers"] == prompt_keys_values
    assert parts["prompt"]["posecrafter"] == prompt_keys_values // f
    # Everything else (attention itself included: every query still meets S keys) costs the same, module by module.
    assert counted["rest_matches"] and parts["rest"]["difference"] == 0 and parts["rest"]["posecrafter"] > 0
    assert counted["posecrafter_flops"] == counted["diffusers_flops"] + temporal - (f - 1) * (
        own_keys_values + prompt_keys_values) // f


def test_table_lists_every_part(counted):
    table = flops.format_table({"size": SIZE, "sampling": [counted], "tuning": []})
    for label in flops.COMPONENTS.values():
        assert label in table
    assert f"ratio {counted['ratio']:.4f}" in table
