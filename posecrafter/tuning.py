"""One-shot tuning on the user's video (spec 3), and saving/loading the tuned weights.

Each step samples a clip of up to 8 frames (sorted random indices; the clip's first frame is the key frame),
one timestep for the clip and independent noise per frame, and minimises the MSE between predicted and true
noise. Only ControlVideo's trainable set changes (spec 2); AdamW betas (0.9, 0.999), weight decay 1e-2.

Two update rules (README, "Tuning: the update rule"):

- ``"paper"`` (default, lr 3e-3) reproduces the official ControlVideo code, whose clipping makes the paper's
  lr meaningful: the loss is scaled by S = 2**16 and back-propagated into *all* UNet and ControlNet weights;
  only the trainable gradients are unscaled and zeroed after each step, so the frozen gradients stay scaled
  by S and accumulate (here in fp32 buffers, whatever the frozen weights' dtype); the global norm over all of
  them is clipped to 1.0, which shrinks the trainable gradients by roughly 1 / (S * |g_frozen|) before AdamW.
  A non-finite gradient skips the step and halves S, as a GradScaler does; unlike the official code, a
  non-finite frozen gradient counts too and is kept out of its buffer. Frozen weights never change (they
  are not in the optimizer).
- ``"clean"`` (lr 3e-5, ControlVideo's own default) freezes everything else and clips the trainable
  gradients alone, as ordinary fine-tuning does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors import safe_open
from safetensors.torch import save_file

from .model import PoseCrafterModel, check_video_inputs, to_model_space
from .schedulers import SCHEDULER_CONFIG
from .skeleton import SkeletonVideo

UPDATE_RULES = ("paper", "clean")
DEFAULT_LR = {"paper": 3e-3, "clean": 3e-5}
LOSS_SCALE = 2.0**16
MAX_GRAD_NORM = 1.0
CLIP_FRAMES = 8
ADAMW_OPTIONS = dict(betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
TUNED_FORMAT = "posecrafter-tuned"
TUNED_FORMAT_VERSION = "1"


def paper_steps(num_frames: int) -> int:
    """Tuning steps for N training frames, supplement Eq. 20: round(475/23 N - 1500/23), at least 50
    (spec 9 #6). N = 8 gives 100 and N = 100 gives 2000."""
    return max(50, round((475 * num_frames - 1500) / 23))


@dataclass
class TrainingClip:
    """One training sample: which frames, the shared timestep, and the noise for each frame."""

    frame_indices: list[int]
    timestep: int
    noise: torch.Tensor  # [len(frame_indices), 4, h, w]


@dataclass
class TuneResult:
    losses: list[float]
    steps: int
    lr: float
    update_rule: str
    frames: int
    skipped_steps: int = 0

    def as_metadata(self) -> dict[str, str]:
        """What save_tuned records about this run."""
        return {"frames": str(self.frames), "steps": str(self.steps), "lr": repr(self.lr),
                "update_rule": self.update_rule}


class OneShotTuner:
    """The training loop's state: optimizer, loss scale and random stream. Changes ``model`` in place."""

    def __init__(self, model: PoseCrafterModel, latents: torch.Tensor, pose_images: torch.Tensor | SkeletonVideo,
                 prompt_embeds: torch.Tensor, *, lr: float | None = None, update_rule: str = "paper", seed: int = 0,
                 gradient_checkpointing: bool = False):
        check_video_inputs(model, latents, pose_images, prompt_embeds)
        if update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule must be one of {UPDATE_RULES}, got {update_rule!r}")
        self.model = model
        self.update_rule = update_rule
        self.lr = DEFAULT_LR[update_rule] if lr is None else lr
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        device = model.device
        self.latents = to_model_space(latents.to(device, torch.float32))
        self.pose_images = pose_images  # stays where the caller keeps it (or drawn per clip): a clip's go to the device
        self.prompt_embeds = prompt_embeds.to(device, torch.float32)
        self.generator = torch.Generator().manual_seed(seed)
        self.noise_schedule = DDPMScheduler.from_pretrained(str(SCHEDULER_CONFIG))
        # fp32 weights train under fp16 autocast on a GPU as the official code did; half weights bring their own.
        self.autocast = torch.autocast(device.type, dtype=torch.float16,
                                       enabled=device.type == "cuda" and model.dtype == torch.float32)
        self.grad_scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and update_rule == "clean")
        self.loss_scale = LOSS_SCALE
        self.skipped_steps = 0

        self.trainable = list(model.trainable_parameters().values())
        trainable_ids = {id(p) for p in self.trainable}
        frozen = [p for p in model.parameters() if id(p) not in trainable_ids]
        self.frozen_grads: dict[torch.nn.Parameter, torch.Tensor] = {}  # "paper": fp32, S-scaled, accumulated
        self._frozen_finite: list[torch.Tensor] = []  # per frozen gradient of the current step: all finite?
        self._hooks = []
        if update_rule == "paper":  # gradients flow into every weight (spec 3)
            for param in frozen:
                param.requires_grad_(True)
                self._hooks.append(param.register_post_accumulate_grad_hook(self._accumulate_frozen_grad))
        for param in self.trainable:
            param.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=self.lr, **ADAMW_OPTIONS)
        if gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
            model.controlnet.enable_gradient_checkpointing()
        model.train()

    @property
    def num_frames(self) -> int:
        return self.latents.shape[0]

    def sample_clip(self) -> TrainingClip:
        """Up to 8 distinct frames in time order, one timestep in 0..999, Gaussian noise per frame."""
        count = min(CLIP_FRAMES, self.num_frames)
        indices = torch.randperm(self.num_frames, generator=self.generator)[:count].sort().values.tolist()
        timestep = int(torch.randint(0, self.noise_schedule.config.num_train_timesteps, (), generator=self.generator))
        noise = torch.randn((count, *self.latents.shape[1:]), generator=self.generator)
        return TrainingClip(indices, timestep, noise)

    def loss(self, clip: TrainingClip) -> torch.Tensor:
        """MSE between true and predicted noise on the clip; the clip's first frame is the key frame."""
        device = self.latents.device
        noise = clip.noise.to(device)
        timestep = torch.tensor(clip.timestep, device=device)
        noisy = self.noise_schedule.add_noise(self.latents[clip.frame_indices], noise, timestep)
        poses = self.pose_images[clip.frame_indices].to(device, torch.float32)
        with self.autocast:
            predicted = self.model(noisy, timestep, self.prompt_embeds, poses, num_frames=len(clip.frame_indices),
                                   key_index=0)
        return F.mse_loss(predicted.float(), noise)

    def step(self, clip: TrainingClip) -> float:
        """One optimisation step on ``clip``; returns its loss."""
        loss = self.loss(clip)
        if self.update_rule == "paper":
            self._paper_update(loss)
        else:
            self._clean_update(loss)
        return loss.item()

    def _accumulate_frozen_grad(self, param: torch.nn.Parameter) -> None:
        """Move a frozen weight's new gradient into its fp32 accumulator (never zeroed, spec 3).

        A non-finite gradient (an fp16 overflow) is left out and makes the step a skipped one; the step's
        finite frozen gradients are kept, as the official code keeps them on skipped steps. The official code
        adds the non-finite one too, and the global norm, hence every later update, becomes NaN for good."""
        finite = torch.isfinite(param.grad).all()
        self._frozen_finite.append(finite)
        grad = param.grad.masked_fill(finite.logical_not(), 0.0)
        if param in self.frozen_grads:
            self.frozen_grads[param].add_(grad)
        else:
            self.frozen_grads[param] = grad.float()
        param.grad = None

    def _paper_update(self, loss: torch.Tensor) -> None:
        self._frozen_finite = []
        (loss * self.loss_scale).backward()
        grads = [p.grad for p in self.trainable if p.grad is not None]
        for grad in grads:
            grad.div_(self.loss_scale)
        finite = torch.stack([torch.isfinite(grad).all() for grad in grads] + self._frozen_finite).all()
        if not finite:  # one device-to-host sync per step
            self.loss_scale /= 2
            self.skipped_steps += 1
        else:
            # Global-norm clip over the trainable and the (still S-scaled) frozen gradients together.
            everything = grads + list(self.frozen_grads.values())
            coefficient = torch.clamp(MAX_GRAD_NORM / (torch.nn.utils.get_total_norm(everything) + 1e-6), max=1.0)
            for grad in everything:
                grad.mul_(coefficient)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # only the trainable gradients

    def _clean_update(self, loss: torch.Tensor) -> None:
        self.grad_scaler.scale(loss).backward()
        self.grad_scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRAD_NORM)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Drop every gradient buffer and return the model to frozen inference mode."""
        for hook in self._hooks:
            hook.remove()
        self.frozen_grads.clear()
        for param in self.model.parameters():
            param.grad = None
        self.model.requires_grad_(False)
        if self.model.unet.is_gradient_checkpointing:
            self.model.unet.disable_gradient_checkpointing()
            self.model.controlnet.disable_gradient_checkpointing()
        self.model.eval()


def tune(model: PoseCrafterModel, latents: torch.Tensor, pose_images: torch.Tensor | SkeletonVideo,
         prompt_embeds: torch.Tensor, *, steps: int | None = None, lr: float | None = None, update_rule: str = "paper",
         seed: int = 0, gradient_checkpointing: bool = False,
         callback: Callable[[int, float], None] | None = None) -> TuneResult:
    """Tune ``model`` in place on one video: raw latents ``[N, 4, h, w]``, one pose image per frame (a tensor,
    or a :class:`SkeletonVideo` that draws each step's clip), and the source-prompt embedding ``[1, 77, 768]``.
    ``steps=None`` uses :func:`paper_steps`. ``callback(step, loss)`` runs after every step; an exception raised
    there stops tuning (the model keeps the steps already made)."""
    steps = paper_steps(latents.shape[0]) if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (or None for the paper's formula), got {steps}")
    tuner = OneShotTuner(model, latents, pose_images, prompt_embeds, lr=lr, update_rule=update_rule, seed=seed,
                         gradient_checkpointing=gradient_checkpointing)
    losses = []
    try:
        for step in range(steps):
            losses.append(tuner.step(tuner.sample_clip()))
            if callback is not None:
                callback(step + 1, losses[-1])
    finally:
        tuner.close()
    return TuneResult(losses, steps, tuner.lr, update_rule, tuner.num_frames, tuner.skipped_steps)


def save_tuned(model: PoseCrafterModel, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write the trainable tensors and their provenance to a safetensors file, atomically (temp file, then
    rename), so an interrupted save never leaves a broken file behind."""
    path = Path(path)
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.trainable_parameters().items()}
    info = {"format": TUNED_FORMAT, "format_version": TUNED_FORMAT_VERSION, **model.base_identity()}
    info.update({key: str(value) for key, value in (metadata or {}).items()})
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(tensors, str(partial), metadata=info)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_tuned_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The provenance recorded in a tuned-weights file; ValueError if it is not one."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            info = handle.metadata() or {}
    except Exception as error:
        raise ValueError(f"{path.name} is not a readable safetensors file: {error}") from error
    if info.get("format") != TUNED_FORMAT:
        raise ValueError(f"{path.name} is not a PoseCrafter tuned-weights file (save one with the tuner first)")
    if info.get("format_version") != TUNED_FORMAT_VERSION:
        raise ValueError(f"{path.name} has tuned-weights format {info.get('format_version')}, this pack reads "
                         f"{TUNED_FORMAT_VERSION}: update the pack")
    return info


def load_tuned(model: PoseCrafterModel, path: str | os.PathLike) -> dict[str, str]:
    """Copy tuned tensors into ``model`` (in place) after checking they were tuned on the same base weights."""
    path = Path(path)
    info = read_tuned_metadata(path)
    ours = model.base_identity()
    for name, digest in (("base", "base_sha256"), ("controlnet", "controlnet_sha256")):
        if info.get(digest) != ours[digest]:
            raise ValueError(
                f"{path.name} was tuned on {name} '{info.get(name + '_name')}' (sha256 {info.get(digest, '?')[:12]}) "
                f"but the loaded {name} is '{ours[name + '_name']}' (sha256 {ours[digest][:12]}): load the "
                "checkpoint and ControlNet it was tuned on"
            )
    trainable = model.trainable_parameters()
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        if names != set(trainable):
            raise ValueError(f"{path.name} holds {len(names)} tensors but the model's trainable set has "
                             f"{len(trainable)}: it was not saved by PoseCrafter's Save Tuned for this model; "
                             "choose another file, or tune again")
        with torch.no_grad():
            for name, param in trainable.items():
                tensor = handle.get_tensor(name)
                if tensor.shape != param.shape:
                    raise ValueError(f"{path.name}: {name} has shape {tuple(tensor.shape)}, the model has "
                                     f"{tuple(param.shape)}; choose tuned weights saved for this model, or tune again")
                param.copy_(tensor)
    return info
