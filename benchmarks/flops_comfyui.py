"""FLOPs of one denoising step of ComfyUI's core SD1.5 + ControlNet path, for ``benchmarks/flops.py --comfyui``.

    cd COMFYUI_DIR && COMFYUI_PYTHON PACK/benchmarks/flops_comfyui.py FRAMES SIZE  # prints the counts as JSON

Runs under ComfyUI's Python, in its folder. The full-size UNet and OpenPose ControlNet are built from the
shipped diffusers configs as fake tensors (``posecrafter/memory.py``) and handed to ComfyUI's own loaders as
state dicts (Load Diffusion Model's and Load ControlNet Model's code, which convert the keys and pick the
model classes); then the core nodes run as a workflow does: Apply ControlNet on a FRAMES-image batch of
SIZE x SIZE poses, and KSampler for one DDIM step at cfg 1 (ComfyUI then skips the unconditional pass) on
FRAMES empty latents. ``FlopCounterMode`` counts as in flops.py; printed are its totals per module, by the
names ComfyUI's classes give (flops.py takes each module's own part).
The one thing skipped is every move or cast of a whole module (``nn.Module.to``: ComfyUI's loaders and its
model management use it): torch cannot swap fake parameters, and FLOPs depend on shapes alone.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count(frames: int, size: int) -> dict[str, int]:
    """FLOPs per module (children included) of one KSampler step (see the module docstring); ComfyUI's modules
    must come first on sys.path (its ``nodes`` and ``tests`` share names with this pack's)."""
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.controlnet
    import comfy.sd
    import nodes
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from benchmarks.flop_counting import flop_counter, flops_per_module
    from posecrafter import memory

    torch.nn.Module.to = lambda module, *args, **kwargs: module
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    unet, controlnet = memory.fake_stock_models(*memory.full_size_configs(), torch.float16, fake_mode)
    with fake_mode:
        model = comfy.sd.load_diffusion_model_state_dict(unet.state_dict())
        control = comfy.controlnet.load_controlnet_state_dict(controlnet.state_dict())
        prompt = [[torch.zeros(1, memory.TEXT_TOKENS, 768), {}]]
        poses = torch.zeros(frames, size, size, 3)
        positive, negative = nodes.ControlNetApplyAdvanced().apply_controlnet(prompt, prompt, control, poses,
                                                                             1.0, 0.0, 1.0)
        latent = {"samples": torch.zeros(frames, 4, size // 8, size // 8)}
    counter = flop_counter()
    with fake_mode, memory.StorageTracker(fake_mode), counter:
        nodes.KSampler().sample(model, 0, 1, 1.0, "ddim", "normal", positive, negative, latent)
    return flops_per_module(counter)


if __name__ == "__main__":
    sys.path[:1] = [".", str(ROOT)]  # ComfyUI's folder (the working directory), then this repository
    print(json.dumps(count(int(sys.argv[1]), int(sys.argv[2]))))
