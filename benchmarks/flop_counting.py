"""FLOP counting on the fake full-size models (posecrafter/memory.py), shared by ``flops.py`` and its ComfyUI
child ``flops_comfyui.py`` (which runs in ComfyUI's folder and so cannot import this repository's ``tests``)."""
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

# The fake tensors sit on a pretend CPU device, where attention runs the CPU flash kernel, which
# FlopCounterMode has no formula for: it gets the CUDA kernels' formulas.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop.__wrapped__,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_backward_flop.__wrapped__,
}


def flop_counter() -> FlopCounterMode:
    """A counter of matrix products, convolutions and attention, the CPU attention kernel included."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)


def flops_per_module(counter: FlopCounterMode) -> dict[str, int]:
    """A FLOP counter's totals per module (children included), keyed by the counter's module names."""
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
