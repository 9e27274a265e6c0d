"""DDIM inversion of the single reference frame (spec 4 "Inversion", 5.2).

Inverting one frame is exact for the replicated reference video: key-frame attention over identical frames
and temporal attention over identical tokens both return the single-frame result, so the paper inverts
"just once". Source-prompt embedding, ControlNet on the reference pose, guidance 1, 50 steps by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .model import PoseCrafterModel, check_video_inputs, to_latent_space, to_model_space
from .schedulers import check_steps, ddim_inverse_scheduler


@dataclass
class Inversion:
    """The inversion trajectory in raw (ComfyUI) latent units.

    ``latents[0]`` is the clean input and ``latents[i]`` the latent at noise level ``timesteps[i - 1]``
    (ascending: 1, 21, ..., 981 for 50 steps); the last one is Z_T, the sampler's starting point.
    """

    latents: torch.Tensor  # [steps + 1, 4, h, w]
    timesteps: list[int]

    @property
    def final(self) -> torch.Tensor:
        """Z_T as a one-frame batch ``[1, 4, h, w]``."""
        return self.latents[-1:]

    def latent_at(self, timestep: int) -> torch.Tensor:
        """The reference latent ``[4, h, w]`` at a sampling timestep (latent editing at alpha > 1)."""
        if timestep not in self.timesteps:
            raise ValueError(
                f"the inversion has no latent at timestep {timestep}: invert with the same number of steps "
                f"as the sampler uses (inversion timesteps {self.timesteps[0]}..{self.timesteps[-1]})"
            )
        return self.latents[self.timesteps.index(timestep) + 1]


@torch.no_grad()
def invert(model: PoseCrafterModel, latent: torch.Tensor, pose_image: torch.Tensor, prompt_embeds: torch.Tensor,
           steps: int = 50, callback: Callable[[int, int], None] | None = None) -> Inversion:
    """DDIM-invert one reference frame ``[1, 4, h, w]`` (raw latents) under its pose ``[1, 3, 8h, 8w]``.

    Each step predicts the noise at the next (higher) timestep and moves along the DDIM path
    (diffusers' ``DDIMInverseScheduler``). ``callback(done, total)`` runs after every step; raising cancels.
    """
    check_video_inputs(model, latent, pose_image, prompt_embeds)
    if latent.shape[0] != 1:
        raise ValueError(f"invert takes one reference frame, got {latent.shape[0]}: select the reference frame first")
    check_steps(steps)
    device = model.device
    scheduler = ddim_inverse_scheduler(steps)
    z = to_model_space(latent.to(device, torch.float32))
    pose_image, prompt_embeds = pose_image.to(device), prompt_embeds.to(device)
    trajectory = [z]
    for step_index, timestep in enumerate(scheduler.timesteps):
        noise = model(z, timestep, prompt_embeds, pose_image, num_frames=1).float()
        z = scheduler.step(noise, timestep, z).prev_sample
        trajectory.append(z)
        if callback is not None:
            callback(step_index + 1, steps)
    return Inversion(to_latent_space(torch.cat(trajectory)), [int(t) for t in scheduler.timesteps])
