"""The GPU memory estimator (posecrafter/memory.py): its accounting against PyTorch's own, and its bad-input errors."""
import functools

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from posecrafter import memory
from posecrafter.model import PoseCrafterModel
from tests.tiny_models import CONTROLNET_CONFIG, UNET_CONFIG, tiny_controlnet, tiny_unet


pytestmark = pytest.mark.usefixtures("one_thread")


def real_and_fake_peaks(workload, dtype=torch.float32):
    """The same workload on the tiny models with real CPU tensors and with fake tensors, tracked alike."""
    real_model = PoseCrafterModel(tiny_unet(), tiny_controlnet())
    for param in real_model.parameters():
        if param.dtype != dtype and not any(p is param for p in real_model.trainable_parameters().values()):
            param.data = param.data.to(dtype)
    real = memory.measure(real_model, workload)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake = memory.measure(memory.fake_model(UNET_CONFIG, CONTROLNET_CONFIG, dtype, fake_mode), workload, fake_mode)
    return real, fake


@pytest.mark.parametrize(("size", "frames"), [(32, 2), (64, 5)])
def test_sampling_estimate_matches_real_tensors(size, frames):
    """Fake tensors account exactly what real ones allocate (dispatch level, 512-byte blocks), at two sizes
    and two frame counts, with guidance and windows."""
    real, fake = real_and_fake_peaks(functools.partial(memory.sample_steps, frames=frames, height=size, width=size,
                                                       guidance_scale=2.0, context_length=3, context_overlap=1))
    assert abs(fake / real - 1) < 0.03, (real, fake)


def test_tuning_estimate_matches_real_tensors():
    """The "paper" rule: gradients into every weight, their fp32 buffers, AdamW state, fp16 autocast copies."""
    real, fake = real_and_fake_peaks(functools.partial(memory.tune_as_on_cuda, frames=3, height=32, width=32,
                                                       update_rule="paper", gradient_checkpointing=False))
    assert abs(fake / real - 1) < 0.03, (real, fake)


def test_inversion_estimate_matches_real_tensors_in_half_precision():
    real, fake = real_and_fake_peaks(functools.partial(memory.invert_steps, height=64, width=64), torch.bfloat16)
    assert abs(fake / real - 1) < 0.03, (real, fake)


def test_tracker_agrees_with_the_cpu_allocator_on_adamw_training():
    """PyTorch's own accounting: the profiler's record of every CPU allocation and free (sizes as allocated),
    against the tracker without block rounding, on a linear layer trained with AdamW. The weights exist before
    either starts: the tracker is told about them (as the estimates are), the profiler's count starts at them."""
    layer = torch.nn.Linear(256, 512)
    optimizer = torch.optim.AdamW(layer.parameters(), foreach=True)
    inputs = torch.randn(64, 256)
    weights = 4 * (256 * 512 + 512)

    def train():
        for _ in range(2):
            layer(inputs).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    tracker = memory.StorageTracker(device_type="cpu", block=1)
    tracker.add(layer.parameters())
    with tracker:
        train()
    layer.reset_parameters()
    optimizer = torch.optim.AdamW(layer.parameters(), foreach=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        train()
    allocated = peak = weights
    for event in sorted((e for e in profile.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns()):
        allocated += event.nbytes()
        peak = max(peak, allocated)
    assert peak > 4 * weights  # the weights, their gradients and both AdamW moments at least
    assert abs(tracker.peak / peak - 1) < 0.03, (tracker.peak, peak)


def test_windows_longer_than_the_video_are_one_window():
    """As in the sampler, a window longer than the video holds all of it: the same peak as no windows."""
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = memory.fake_model(UNET_CONFIG, CONTROLNET_CONFIG, torch.float32, fake_mode)
    whole = memory.measure(model, functools.partial(memory.sample_steps, frames=3, height=32, width=32), fake_mode)
    long_window = memory.measure(model, functools.partial(memory.sample_steps, frames=3, height=32, width=32,
                                                          context_length=16), fake_mode)
    assert long_window == whole


def test_estimates_on_a_model_used_before_are_those_on_a_fresh_one():
    """The full-size estimates share one fake model per dtype: every run must leave it as it found it (the
    tuner's "paper" rule turns gradients on for the frozen weights, checkpointing wraps the blocks)."""
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)

    def model():
        return memory.fake_model(UNET_CONFIG, CONTROLNET_CONFIG, torch.float32, fake_mode)

    clean = functools.partial(memory.tune_as_on_cuda, frames=3, height=32, width=32, update_rule="clean",
                              gradient_checkpointing=False)
    sampling = functools.partial(memory.sample_steps, frames=3, height=32, width=32)
    used = model()
    memory.measure(used, functools.partial(memory.tune_as_on_cuda, frames=3, height=32, width=32,
                                           update_rule="paper", gradient_checkpointing=True), fake_mode)
    assert memory.measure(used, clean, fake_mode) == memory.measure(model(), clean, fake_mode)
    assert memory.measure(used, sampling, fake_mode) == memory.measure(model(), sampling, fake_mode)


@pytest.mark.parametrize(("estimate", "message"), [
    (lambda: memory.tuning_peak(0, 512, 512), "zero frames"),
    (lambda: memory.tuning_peak(8, 500, 512), "multiples of 8"),
    (lambda: memory.sampling_peak(17, 512, 516), "multiples of 8"),
    (lambda: memory.sampling_peak(17, 512, 512, context_length=4, context_overlap=4), "context_overlap"),
])
def test_bad_settings_raise_the_engines_errors(estimate, message):
    with pytest.raises(ValueError, match=message):
        estimate()


def test_full_size_inversion_estimate_holds_the_weights_and_is_cached():
    """fp16 frozen weights (1.2 B values) and the fp32 trainable set (72 M) are resident; one 512 px frame
    adds little; a second call is answered from the cache."""
    weights = 2 * (1_274_582_484 - 72_130_240) + 4 * 72_130_240
    peak = memory.inversion_peak(512, 512, dtype=torch.float16)
    assert weights < peak < weights + 2**30
    assert memory.inversion_peak(512, 512, dtype=torch.float16) == peak
    assert memory.inversion_peak.cache_info().hits >= 1
    assert memory.with_margin(peak) > peak + 2**29
