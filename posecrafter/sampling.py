"""Joint DDIM sampling of all frames (spec 4, 5.5) and the windowed long-video mode (spec 8.3).

The inserted reference frame sits at ``key_index`` (default 0): every frame attends to its keys/values.
In windowed mode each window holds the reference plus ``context_length`` consecutive target frames, so the
reference is the key frame of every window; the windows' noise predictions are averaged per frame and one
scheduler step moves all frames. Memory is bounded by the window, not by the video length.
"""
from __future__ import annotations

from typing import Callable

import torch

from .model import PoseCrafterModel, check_video_inputs, to_latent_space, to_model_space
from .schedulers import check_steps, ddim_scheduler
from .skeleton import SkeletonVideo

StepHook = Callable[[int, int, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int, torch.Tensor], None]
FUSE_METHODS = ("uniform", "triangular")


def temporal_windows(num_frames: int, key_index: int, context_length: int | None, context_overlap: int) -> list[list[int]]:
    """Frame indices of each window (spec 8.3): the key frame plus ``context_length`` consecutive others.

    Window i starts at ``i * (context_length - context_overlap)`` among the non-key frames; the last one is
    shifted back so that every window is full. With ``context_length=None`` or a video that fits, one window
    holds every frame.
    """
    others = [i for i in range(num_frames) if i != key_index]
    if context_length is None or len(others) <= context_length:
        return [list(range(num_frames))]
    stride = context_length - context_overlap
    starts = list(range(0, len(others) - context_length + 1, stride))
    if starts[-1] != len(others) - context_length:
        starts.append(len(others) - context_length)
    return [sorted([key_index, *others[start:start + context_length]]) for start in starts]


def _fusion_weights(window: list[int], key_index: int, fuse: str) -> torch.Tensor:
    """Per-frame weights of one window's prediction: uniform, or a triangle peaking mid-window; the key
    frame's own prediction is always averaged uniformly over windows."""
    if fuse == "uniform":
        return torch.ones(len(window))
    targets = len(window) - 1
    ramp = [min(j + 1, targets - j) for j in range(targets)]
    weights = iter(ramp)
    return torch.tensor([1.0 if frame == key_index else float(next(weights)) for frame in window])


def guided_noise(model: PoseCrafterModel, latents, timestep, pose_images, prompt_embeds, negative_embeds,
                 guidance_scale: float, controlnet_scale: float, key_index: int) -> torch.Tensor:
    """Noise prediction for one video in model space; classifier-free guidance only when guidance > 1."""
    frames = latents.shape[0]
    if guidance_scale == 1.0:
        return model(latents, timestep, prompt_embeds, pose_images, frames, key_index, controlnet_scale).float()
    both = model(
        torch.cat([latents, latents]), timestep, torch.cat([negative_embeds, prompt_embeds]),
        torch.cat([pose_images, pose_images]), frames, key_index, controlnet_scale,
    ).float()
    uncond, cond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def check_sampling_options(prompt_embeds, negative_embeds, guidance_scale: float, context_length, context_overlap,
                           fuse):
    if guidance_scale < 1:
        raise ValueError(f"guidance_scale must be >= 1 (1 = a single conditional pass), got {guidance_scale}")
    if guidance_scale > 1 and negative_embeds is None:
        raise ValueError("guidance_scale > 1 needs negative conditioning: connect a negative prompt (it may be empty)")
    if negative_embeds is not None and negative_embeds.shape != prompt_embeds.shape:
        raise ValueError(f"negative conditioning {tuple(negative_embeds.shape)} must have the prompt's shape "
                         f"{tuple(prompt_embeds.shape)}")
    if context_length is not None:
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1 frame, got {context_length}")
        if not 0 <= context_overlap < context_length:
            raise ValueError(
                f"context_overlap ({context_overlap}) must be >= 0 and smaller than context_length ({context_length})"
            )
    if fuse not in FUSE_METHODS:
        raise ValueError(f"fuse must be one of {FUSE_METHODS}, got {fuse!r}")


@torch.no_grad()
def sample(model: PoseCrafterModel, latents: torch.Tensor, pose_images: torch.Tensor | SkeletonVideo,
           prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor | None = None, *, steps: int = 50,
           guidance_scale: float = 1.0, controlnet_scale: float = 1.0, key_index: int = 0,
           context_length: int | None = None, context_overlap: int = 4, fuse: str = "uniform",
           step_hook: StepHook | None = None, callback: Progress | None = None) -> torch.Tensor:
    """Denoise all frames jointly with DDIM (eta 0) from their initial latents; return the clean latents.

    latents: ``[F, 4, h, w]`` raw initial latents (the reference's Z_T at ``key_index``, edited copies
    elsewhere); pose_images: ``[F, 3, 8h, 8w]``, or a :class:`SkeletonVideo` of that shape, which draws each
    window's skeletons when the window runs (host memory then stays flat in video length; same result);
    prompt/negative embeddings ``[1, 77, 768]``.
    ``step_hook(step_index, timestep, latents)`` runs before every step on the model-space latents and
    returns the latents to use (latent editing at alpha > 1). ``callback(done, total, denoised)`` runs after
    every step with that step's DDIM prediction of the clean frames (raw latents, for live previews); an
    exception raised there cancels sampling.
    """
    check_video_inputs(model, latents, pose_images, prompt_embeds, key_index)
    check_steps(steps)
    check_sampling_options(prompt_embeds, negative_embeds, guidance_scale, context_length, context_overlap, fuse)
    frames = latents.shape[0]
    device = model.device
    scheduler = ddim_scheduler(steps)
    x = to_model_space(latents.to(device, torch.float32))
    # Pose images stay where the caller keeps them (or are drawn per window): only a window's go to the device.
    prompt_embeds = prompt_embeds.to(device)
    negative_embeds = negative_embeds.to(device) if negative_embeds is not None else None
    windows = temporal_windows(frames, key_index, context_length, context_overlap)
    weights = [_fusion_weights(w, key_index, fuse).to(device).view(-1, 1, 1, 1) for w in windows]
    coverage = torch.zeros(frames, 1, 1, 1, device=device)  # each frame's summed fusion weight
    for window, weight in zip(windows, weights):
        coverage[window] += weight

    for step_index, timestep in enumerate(scheduler.timesteps):
        if step_hook is not None:
            x = step_hook(step_index, int(timestep), x)
        noise = torch.zeros_like(x)
        for window, weight in zip(windows, weights):
            noise[window] += weight * guided_noise(
                model, x[window], timestep, pose_images[window].to(device), prompt_embeds, negative_embeds,
                guidance_scale, controlnet_scale, window.index(key_index),
            )
        noise /= coverage  # in place: one latent-sized buffer fewer per frame
        step = scheduler.step(noise, timestep, x)
        x = step.prev_sample
        if callback is not None:
            callback(step_index + 1, steps, to_latent_space(step.pred_original_sample))
    return to_latent_space(x)
