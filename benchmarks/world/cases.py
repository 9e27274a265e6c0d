"""One case of the outcome benchmark: a person's training video, a driving person's motion, and the pack's method
(or one ablation of it) run through the engine calls the nodes make, scored against the world's ground truth.

The method (``full``), as the shipped one-shot workflow runs it: 8 training frames at the paper's stride (Select
Frames), one-shot tuning (paper rule, paper steps, lr 3e-3), the driving poses retargeted onto the training body
(Pose Retarget, bones), Eq. 5's reference frame (distance "visible") DDIM-inverted under the source prompt, its
pose inserted as key frame 0, face and hand latents moved by affine warps (alpha 1), all frames sampled jointly
(DDIM, guidance 1; the attribute edit at guidance 3 with an empty negative prompt, as workflow (c)), the
inserted frame dropped, decoded. The ground truth is the training person doing the driving motion with their own
proportions, placed where retargeting places them (same anchor), rendered in the training room.
"""
from __future__ import annotations

import copy
import time
from functools import cached_property, lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from posecrafter.inversion import invert
from posecrafter.latent_edit import edit_initial_latents, plan_latent_edits
from posecrafter.model import PoseCrafterModel
from posecrafter.pose import PoseSequence
from posecrafter.reference import insert_reference_pose, remove_inserted_reference, select_reference_frame
from posecrafter.retarget import _anchor_points, retarget_poses
from posecrafter.sampling import sample, temporal_windows
from posecrafter.skeleton import SkeletonVideo
from posecrafter.training_frames import select_covering_frames, uniform_indices
from posecrafter.tuning import tune

from . import models
from .people import MOTIONS, SHIRT_COLOURS, background, check_motion, identity, motion, render
from .scoring import score

ABLATIONS = (
    "ground_truth", "vae_roundtrip", "base", "no_tuning", "full", "no_reference_insertion", "random_noise",
    "no_latent_edit", "eq5_paper", "cover_frames", "retarget_off", "all_frames_64", "windows_64", "bf16",
    "attribute_edit",
)
SIZE = models.SIZE
TRAINING_FRAMES = 24  # the user's clip (P)
TUNING_FRAMES = 8  # N, the paper's default
TARGET_FRAMES = 16  # M
LONG_FRAMES = 64  # the windows rows' drive
CONTEXT_LENGTH, CONTEXT_OVERLAP = 16, 4
STEPS = 25  # DDIM steps for inversion and sampling
ATTRIBUTE_EDIT_GUIDANCE = 3.0  # the paper's for attribute edits, with an empty negative prompt, as workflow (c)
DRIVING_SEED_OFFSET = 1000  # the driving person: another body and motion seed


def check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation {ablation!r} is unknown: use one of {', '.join(ABLATIONS)}")


@lru_cache(maxsize=None)
def _shared():
    """The world's trained models and prompt embeddings, loaded once per process."""
    return models.load_vae(models.WEIGHTS), models.load_video_model(models.WEIGHTS), models.prompt_embeddings()


def _anchor(poses: PoseSequence) -> np.ndarray:
    """Where retargeting's "ground" anchor sits in the first frame: the neck's x, the lowest ankle or foot point."""
    return _anchor_points(poses.points, poses.visible, "ground")[0]


def _subset(poses: PoseSequence, indices) -> PoseSequence:
    return PoseSequence(poses.points[indices], poses.scores[indices], poses.canvas_width, poses.canvas_height)


def _skeletons(poses: PoseSequence) -> SkeletonVideo:
    return SkeletonVideo(poses, SIZE, SIZE)


def farthest_shirt(name: str) -> str:
    """The named shirt colour farthest (RGB) from ``name``: the attribute edit's target."""
    colour = np.array(SHIRT_COLOURS[name])
    return max(SHIRT_COLOURS, key=lambda other: np.linalg.norm(np.array(SHIRT_COLOURS[other]) - colour))


class Case:
    """A person (identity and body from ``identity_seed``) in a room, filmed doing ``training_motion``, driven by
    another person's ``driving_motion``. Tuned models are cached, so every ablation of one case shares them."""

    def __init__(self, identity_seed: int, background_seed: int, training_motion: str, driving_motion: str):
        check_motion(training_motion)
        check_motion(driving_motion)
        self.person = identity(identity_seed)
        self.room = background(background_seed, SIZE)
        self.training_poses = motion(training_motion, TRAINING_FRAMES, identity_seed, SIZE)
        self.training_frames = render(self.training_poses, self.person, self.room)
        self.driving_seed = identity_seed + DRIVING_SEED_OFFSET
        self.identity_seed, self.driving_motion = identity_seed, driving_motion
        self.source_prompt = models.prompt(self.person.shirt)
        self._tuned = {}
        self.videos = {}  # ablation -> the generated uint8 frames of its last run

    # The models load on first use, so a case's poses and renders need no weights (install.py, the ComfyUI test).
    vae = property(lambda self: _shared()[0])
    base = property(lambda self: _shared()[1])
    embeddings = property(lambda self: _shared()[2])

    @cached_property
    def latents(self) -> torch.Tensor:
        return models.encode(self.vae, self.training_frames)

    # ------------------------------------------------------------------ poses
    def driving(self, frames: int) -> PoseSequence:
        return motion(self.driving_motion, frames, self.driving_seed, SIZE)

    def targets(self, frames: int, retarget: bool = True) -> PoseSequence:
        driving = self.driving(frames)
        return retarget_poses(driving, self.training_poses).poses if retarget else driving

    def ground_truth(self, frames: int) -> PoseSequence:
        """The driving motion on the training body, placed as retargeting places it."""
        own = motion(self.driving_motion, frames, self.driving_seed, SIZE, body_seed=self.identity_seed)
        return PoseSequence(own.points + (_anchor(self.training_poses) - _anchor(own)), own.scores, SIZE, SIZE)

    # ------------------------------------------------------------------ tuning
    def tuning_indices(self, cover: bool, targets: PoseSequence) -> list[int]:
        if cover:
            return select_covering_frames(self.training_poses, targets, TUNING_FRAMES)
        return uniform_indices(TRAINING_FRAMES, TUNING_FRAMES)

    def tuned(self, indices: list[int], dtype=torch.float32):
        key = (tuple(indices), dtype)
        if key not in self._tuned:
            model = copy.deepcopy(self.base)
            if dtype != torch.float32:
                model = _with_frozen_dtype(model, dtype)
            poses = _subset(self.training_poses, indices)
            tune(model, self.latents[indices], _skeletons(poses), self.embeddings[self.source_prompt], seed=0)
            self._tuned[key] = model
        return self._tuned[key]

    # ------------------------------------------------------------------ inference
    def start_latents(self, model, indices: list[int], targets: PoseSequence, *, distance="visible",
                      invert_reference=True, edit=True) -> tuple[PoseSequence, torch.Tensor]:
        """The poses and start latents of the method's sampling: Eq. 5's reference frame among the training frames
        ``indices``, its pose inserted as frame 0 before ``targets``, and its DDIM inversion (or noise) at frame 0
        and, face and hand latents moved by the affine warps, at every target frame."""
        training = _subset(self.training_poses, indices)
        reference = select_reference_frame(training, targets, distance).index
        ref_pose = training.frame(reference)
        inserted = insert_reference_pose(targets, ref_pose, k=0)
        if not invert_reference:
            return inserted, _noise(len(inserted), seed=1)
        ref_latent = self.latents[indices[reference]:indices[reference] + 1]
        source = self.embeddings[self.source_prompt]
        z_t = invert(model, ref_latent, _skeletons(ref_pose)[:], source, steps=STEPS).final
        plan = plan_latent_edits(inserted, SIZE // 8, SIZE // 8)
        return inserted, edit_initial_latents(z_t, plan) if edit else z_t.repeat(len(inserted), 1, 1, 1)

    def generate(self, model, indices: list[int], targets: PoseSequence, *, prompt: str, distance="visible",
                 insert=True, invert_reference=True, edit=True, context_length=None, guidance=1.0) -> np.ndarray:
        """The method's inference on ``targets`` with the training frames ``indices``; uint8 frames [M, H, W, 3].
        ``guidance`` above 1 adds the empty prompt's pass as the negative."""
        poses, start = self.start_latents(model, indices, targets, distance=distance,
                                          invert_reference=invert_reference, edit=edit)
        if not insert:  # the same start, without the inserted frame and its pose
            start, poses = start[1:], targets
        negative = self.embeddings[""] if guidance != 1 else None
        out = sample(model, start, _skeletons(poses), self.embeddings[prompt], negative, steps=STEPS,
                     guidance_scale=guidance, key_index=0, context_length=context_length,
                     context_overlap=CONTEXT_OVERLAP)
        if insert:
            out = remove_inserted_reference(out, poses)
        return models.decode(self.vae, out)

    def base_video(self, targets: PoseSequence) -> np.ndarray:
        """The floor: the untuned model from noise with the target poses and the prompt, no reference frame."""
        out = sample(self.base, _noise(len(targets), seed=2), _skeletons(targets),
                     self.embeddings[self.source_prompt], steps=STEPS, key_index=0)
        return models.decode(self.vae, out)

    # ------------------------------------------------------------------ rows
    def run(self, ablation: str = "full") -> dict:
        """Generate the video ``ablation`` asks for (kept in ``self.videos``) and score it; adds ``seconds`` (wall
        time of this row, tuning included when this call did it)."""
        check_ablation(ablation)
        started = time.perf_counter()
        long = ablation in ("all_frames_64", "windows_64")
        frames = LONG_FRAMES if long else TARGET_FRAMES
        truth = self.ground_truth(frames)
        targets = self.targets(frames, retarget=ablation != "retarget_off")
        person = self.person
        uniform = uniform_indices(TRAINING_FRAMES, TUNING_FRAMES)
        prompt = self.source_prompt
        if ablation == "ground_truth":
            video = render(truth, person, self.room)
        elif ablation == "vae_roundtrip":  # the renders through the VAE: the ceiling of any generated row
            video = models.decode(self.vae, models.encode(self.vae, render(truth, person, self.room)))
        elif ablation == "base":
            video = self.base_video(targets)
        elif ablation == "no_tuning":
            video = self.generate(self.base, uniform, targets, prompt=prompt)
        elif ablation == "cover_frames":
            indices = self.tuning_indices(True, targets)
            video = self.generate(self.tuned(indices), indices, targets, prompt=prompt)
        elif ablation == "bf16":
            with Bf16ConvolutionsInFp32():
                video = self.generate(self.tuned(uniform, torch.bfloat16), uniform, targets, prompt=prompt)
        else:
            options = {"no_reference_insertion": dict(insert=False), "random_noise": dict(invert_reference=False),
                       "no_latent_edit": dict(edit=False), "eq5_paper": dict(distance="paper"),
                       "windows_64": dict(context_length=CONTEXT_LENGTH)}.get(ablation, {})
            if ablation == "attribute_edit":
                person = self.person.with_shirt(farthest_shirt(self.person.shirt))
                prompt = models.prompt(person.shirt)
                options = dict(guidance=ATTRIBUTE_EDIT_GUIDANCE)
            video = self.generate(self.tuned(uniform), uniform, targets, prompt=prompt, **options)
        result = score(video, truth, person, self.room)
        if ablation == "attribute_edit":  # the shirt against the tuned person's: did it change?
            result["identity_torso_original"] = score(video, truth, self.person, self.room)["identity_torso"]
        if long:
            result["seam"] = seam_ratio(video, LONG_FRAMES)
        result["seconds"] = time.perf_counter() - started
        self.videos[ablation] = video
        return result


def _noise(frames: int, seed: int) -> torch.Tensor:
    """Raw-latent Gaussian noise (unit variance in the UNet's space)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(frames, 4, SIZE // 8, SIZE // 8, generator=generator) / models.LATENT_SCALE


def _with_frozen_dtype(model, dtype):
    """The same model with its frozen weights in ``dtype`` (the trainable set stays fp32), as the Model Loader's
    bf16 precision loads it."""
    unet, controlnet = copy.deepcopy(model.unet), copy.deepcopy(model.controlnet)
    for module in (unet, controlnet):
        module.to(dtype)
    return PoseCrafterModel(unet, controlnet)


class Bf16ConvolutionsInFp32(TorchFunctionMode):
    """bf16 2-D convolutions computed as a GPU computes them, bf16 inputs and weights with fp32 accumulation, the
    output rounded to bf16: the operands are rounded to bf16, convolved in fp32 (bf16 -> fp32 is exact), and the
    result rounded. Only the accumulation order differs from a bf16 kernel's. Without bf16 instructions (AVX2
    CPUs) PyTorch's bf16 convolution takes a fallback kernel (the world's 9-frame forward pass: 8.65 s in bf16
    against 0.13 s in fp32), which made the bf16 row unrunnable here; every other op keeps its own bf16
    kernel."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func not in (F.conv2d, torch.conv2d):
            return func(*args, **kwargs)
        inputs, weight, *rest = args
        bias = rest.pop(0) if rest else kwargs.pop("bias", None)
        autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        if torch.bfloat16 not in (inputs.dtype, weight.dtype) and not autocast_bf16:
            return func(inputs, weight, bias, *rest, **kwargs)
        rounded = lambda t: None if t is None else t.to(torch.bfloat16).float()  # noqa: E731
        with torch.autocast("cpu", enabled=False):
            return func(rounded(inputs), rounded(weight), rounded(bias), *rest, **kwargs).to(torch.bfloat16)


def seam_ratio(frames: np.ndarray, target_frames: int) -> float:
    """Mean frame-to-frame change across the window boundaries of 16/4 windows (the inserted frame at 0) over the
    mean change elsewhere; 1 means the seams do not show."""
    change = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))  # change[t]: t -> t+1
    windows = temporal_windows(target_frames + 1, 0, CONTEXT_LENGTH, CONTEXT_OVERLAP)
    # output indices (the inserted frame 0 is dropped): the change into each later window's first frame, and out
    # of each earlier window's last frame
    boundaries = {window[1] - 2 for window in windows[1:]} | {window[-1] - 1 for window in windows[:-1]}
    at = sorted(b for b in boundaries if 0 <= b < len(change))
    rest = [t for t in range(len(change)) if t not in boundaries]
    return float(change[at].mean() / max(change[rest].mean(), 1e-9))


def run_case(identity_seed: int, background_seed: int, training_motion: str, driving_motion: str,
             ablation: str = "full") -> dict:
    """Score one ablation of one case (see :class:`Case`)."""
    check_ablation(ablation)
    return Case(identity_seed, background_seed, training_motion, driving_motion).run(ablation)

