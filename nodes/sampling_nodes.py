"""DDIM inversion of the reference frame, face/hand latent editing, and the temporal sampler."""
import dataclasses

import torch

from ..posecrafter import inversion as pc_inversion
from ..posecrafter import latent_edit, memory, sampling
from ..posecrafter.model import to_model_space
from ..posecrafter.pose import from_pose_keypoint
from ..posecrafter.reference import remove_inserted_reference
from ..posecrafter.schedulers import MAX_STEPS
from . import _comfy
from .common import (
    CATEGORY, INVERSION_TYPE, LATENT_SCALE, MODEL_TYPE, check_frame_count, check_gpu_memory, context_window_problem,
    latent_samples, pose_images_for, poses_for_latents, prompt_embeds,
)
from .pose_nodes import release_dwpose_sessions

EDIT_KEY = "posecrafter_edit"  # LATENT key carrying the latent editor's plan to the sampler (alpha > 1)
STEPS_KEY = "posecrafter_inversion_steps"  # LATENT key: the DDIM steps of the inversion the latents start from


def _inserted_position(poses):
    if poses.inserted_reference is None:
        raise ValueError("'pose' has no inserted reference frame: connect the PoseCrafter Pose Inserter's output")
    return poses.inserted_reference


def _run_model(model, work, what, estimate, fixes):
    """Run `work(module, device)` on the GPU with ComfyUI's models unloaded first and the cache emptied after; on
    CUDA, stop first when the memory `estimate` does not fit (see check_gpu_memory)."""
    _comfy.free_memory_for_heavy_work()
    release_dwpose_sessions()
    device = _comfy.torch_device()
    check_gpu_memory(device, what, estimate, fixes)
    module = model.activate(device)
    try:
        return work(module, device)
    finally:
        model.offload()
        _comfy.empty_cache()


class DDIMInverter:
    DESCRIPTION = (
        "DDIM inversion of the reference frame with the source prompt and its pose (guidance 1). Inverting one "
        "frame gives the starting latent of every frame of the pseudo reference video (paper Sec. 5.2)."
    )
    CATEGORY = CATEGORY + "/sampling"
    RETURN_TYPES = (INVERSION_TYPE,)
    RETURN_NAMES = ("inversion",)
    OUTPUT_TOOLTIPS = ("Z_T of the reference frame and every intermediate latent.",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The tuned model."}),
                "latent": ("LATENT", {"tooltip": "The reference frame's latent (Reference Frame Selector)."}),
                "pose": ("POSE_KEYPOINT", {"tooltip": "The reference frame's pose."}),
                "conditioning": ("CONDITIONING", {"tooltip": "The source prompt (the one used for tuning)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": MAX_STEPS, "tooltip": "DDIM steps; use the same number in the Temporal Sampler."}),
            }
        }

    def invert(self, model, latent, pose, conditioning, steps):
        samples = latent_samples(latent, "latent")
        poses = from_pose_keypoint(pose, "pose")
        if samples.shape[0] != 1 or len(poses) != 1:
            raise ValueError(
                f"'latent' and 'pose' must hold the single reference frame (got {samples.shape[0]} latents and "
                f"{len(poses)} poses): connect the Reference Frame Selector's outputs"
            )
        pose_image = pose_images_for(poses, samples)[:]  # the one frame, drawn now
        embeds = prompt_embeds(conditioning, "conditioning", model.model.text_width)
        progress = _comfy.Progress(steps, "PoseCrafter DDIM inversion")

        def work(module, device):
            return pc_inversion.invert(
                module, samples.to(device), pose_image.to(device), embeds.to(device), steps=steps,
                callback=lambda done, total: progress.update(done),
            )

        height, width = samples.shape[-2] * LATENT_SCALE, samples.shape[-1] * LATENT_SCALE
        dtype = model.model.dtype

        def peak(dtype=dtype):
            return lambda: memory.inversion_peak(height, width, steps, dtype)

        fixes = {"Model Loader dtype fp16": peak(torch.float16)} if dtype == torch.float32 else {}
        try:
            result = _run_model(model, work, "PoseCrafter DDIM inversion", peak(), fixes)
        finally:
            progress.close()
        return (pc_inversion.Inversion(result.latents.cpu(), result.timesteps),)


class LatentEditor:
    DESCRIPTION = (
        "Builds the M+1 starting latents from the inverted reference: the reference's face and hands are moved "
        "by an affine fit to where each target pose has them (paper Eq. 18-19). The inserted frame is untouched."
    )
    CATEGORY = CATEGORY + "/sampling"
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("latent", "report")
    OUTPUT_TOOLTIPS = ("The M+1 starting latents for the Temporal Sampler.", "What was edited or skipped per frame.")
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "inversion": (INVERSION_TYPE, {"tooltip": "The reference frame's DDIM inversion."}),
                "pose": ("POSE_KEYPOINT", {"tooltip": "The M+1 poses from the Pose Inserter (the inserted one is the reference)."}),
                "edit_face": ("BOOLEAN", {"default": True, "tooltip": "Move the face region to each target face."}),
                "edit_hands": ("BOOLEAN", {"default": True, "tooltip": "Move the hand regions to each target hand."}),
                "alpha": ("INT", {"default": 1, "min": 1, "max": MAX_STEPS, "tooltip": "The DDIM sampling step at which the edit happens. 1 edits the starting latent (the paper's default); a later step edits with the inversion's latent of that step."}),
            }
        }

    def edit(self, inversion, pose, edit_face, edit_hands, alpha):
        poses = from_pose_keypoint(pose, "pose")
        _inserted_position(poses)
        steps = len(inversion.timesteps)
        if alpha > steps:
            raise ValueError(f"'alpha' is {alpha} but the inversion has {steps} DDIM steps: choose alpha between 1 "
                             f"and {steps} (1 edits the starting latent)")
        z_t = inversion.final.cpu()
        on_latents = poses_for_latents(poses, z_t.shape[-2], z_t.shape[-1])
        plan = _only_parts(latent_edit.plan_latent_edits(on_latents, z_t.shape[-2], z_t.shape[-1]), edit_face, edit_hands)
        if alpha == 1:
            out = {"samples": latent_edit.edit_initial_latents(z_t, plan), STEPS_KEY: steps}
        else:
            # Start from unedited copies; the sampler edits before step alpha (see TemporalSampler).
            out = {"samples": z_t.repeat(len(poses), 1, 1, 1), STEPS_KEY: steps, EDIT_KEY: (inversion, plan, alpha)}
        report = "\n".join(plan.report())
        _comfy.log.info("PoseCrafter latent edits (alpha %d):\n%s", alpha, report)
        return out, report


def _only_parts(plan, face, hands):
    """The plan with the parts the user turned off marked as skipped."""
    enabled = {"face": face, "left hand": hands, "right hand": hands}
    frames = tuple(
        tuple(edit if enabled[edit.part] else latent_edit.PartEdit(edit.part, skip_reason="turned off") for edit in edits)
        for edits in plan.frames
    )
    return dataclasses.replace(plan, frames=frames)


class TemporalSampler:
    DESCRIPTION = (
        "DDIM sampling of all frames together with key-frame and temporal attention, each frame steered by its "
        "pose through the ControlNet; optional sliding windows for long videos. Drops the inserted frame."
    )
    CATEGORY = CATEGORY + "/sampling"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The generated frames' latents (decode with VAE Decode).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The tuned model."}),
                "latent": ("LATENT", {"tooltip": "The M+1 starting latents (Latent Editor)."}),
                "pose": ("POSE_KEYPOINT", {"tooltip": "The M+1 poses (Pose Inserter); the inserted one is the key frame."}),
                "positive": ("CONDITIONING", {"tooltip": "The target prompt. The source prompt keeps the training look; change it to edit attributes (with cfg 3)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": MAX_STEPS, "tooltip": "DDIM steps (eta 0); use the inversion's number."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip": "Guidance scale. 1 is a single conditional pass (the paper's default); about 3 for attribute edits, with a negative prompt."}),
                "control_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05, "tooltip": "ControlNet conditioning scale."}),
                "context_length": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "Frames per sliding window for long videos (16 is a good value); 0 samples all frames at once."}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": 1000, "tooltip": "Frames shared by neighbouring windows; must be smaller than context_length."}),
                "drop_inserted_frame": ("BOOLEAN", {"default": True, "tooltip": "Remove the inserted reference frame from the output (M frames out)."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt for cfg > 1 (an empty prompt is the paper's choice)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, input_types, cfg=None, context_length=None, context_overlap=None):
        """Refuse at queue time what would fail only after tuning and inversion. Asking for ``input_types`` (the
        types of the linked inputs) turns off ComfyUI's own link type check, and declaring widgets its min/max
        check, for this node: both are done here. Linked widget values are unknown here and arrive as None."""
        declared = {name: spec[0] for group in cls.INPUT_TYPES().values() for name, spec in group.items()}
        for name, received in input_types.items():
            if received != declared[name] and "*" not in (received, declared[name]):
                return f"'{name}' takes {declared[name]}, but a {received} output is connected to it"
        if cfg is not None:
            if not 1.0 <= cfg <= 30.0:
                return f"'cfg' is {cfg}: use 1 to 30"
            if cfg > 1 and "negative" not in input_types:
                return ("cfg > 1 needs a 'negative' conditioning: connect a CLIP Text Encode with an empty prompt "
                        "to 'negative', or set cfg to 1")
        if context_length is not None and context_overlap is not None:
            return context_window_problem(context_length, context_overlap) or True
        return True

    def sample(self, model, latent, pose, positive, steps, cfg, control_strength, context_length, context_overlap,
               drop_inserted_frame, negative=None):
        window_problem = context_window_problem(context_length, context_overlap)
        if window_problem:  # reached when the widgets are linked, so VALIDATE_INPUTS saw no values
            raise ValueError(window_problem)
        samples = latent_samples(latent, "latent")
        poses = from_pose_keypoint(pose, "pose")
        check_frame_count(len(poses), samples.shape[0], "pose", "latent")
        position = _inserted_position(poses)
        if cfg > 1 and negative is None:
            raise ValueError("cfg > 1 needs a 'negative' conditioning: connect a CLIP Text Encode with an empty prompt")
        inversion_steps = latent.get(STEPS_KEY, steps)
        if inversion_steps != steps:
            raise ValueError(
                f"'steps' is {steps} but the starting latents come from a {inversion_steps}-step DDIM inversion, "
                f"which starts at another noise level: set steps to {inversion_steps} here or in the DDIM Inverter"
            )
        embeds = prompt_embeds(positive, "positive", model.model.text_width)
        negative_embeds = prompt_embeds(negative, "negative", model.model.text_width) if cfg > 1 else None
        edit = latent.get(EDIT_KEY)
        preview_frame = 1 if position == 0 and samples.shape[0] > 1 else 0  # the first generated frame
        progress = _comfy.Progress(steps, "PoseCrafter sampling")

        def work(module, device):
            hook = None
            if edit is not None:
                inversion, plan, alpha = edit
                # the sampler's hook sees model-space latents, the inversion keeps raw ones
                hook = latent_edit.alpha_edit_hook(
                    plan, lambda t: to_model_space(inversion.latent_at(t).to(device)), alpha
                )
            return sampling.sample(
                module, samples.to(device), pose_images_for(poses, samples, device), embeds.to(device),
                None if negative_embeds is None else negative_embeds.to(device),
                steps=steps, guidance_scale=cfg, controlnet_scale=control_strength, key_index=position,
                context_length=context_length or None, context_overlap=context_overlap,
                step_hook=hook, callback=lambda done, total, denoised: progress.update(done, denoised[preview_frame:preview_frame + 1]),
            )

        try:
            out = _run_model(model, work, "PoseCrafter sampling", *_sampling_estimates(
                samples, cfg, context_length or None, context_overlap, model.model.dtype)).to("cpu")
        finally:
            progress.close()
        if drop_inserted_frame:
            out = remove_inserted_reference(out, poses)
        return ({"samples": out},)


WINDOW = 16  # the context_length suggested when the frames do not fit at once (workflow d's)


def _sampling_estimates(samples, cfg, context_length, context_overlap, dtype):
    """The sampling run's memory estimate, and the settings that lower it with theirs (for check_gpu_memory)."""
    frames, height, width = samples.shape[0], samples.shape[-2] * LATENT_SCALE, samples.shape[-1] * LATENT_SCALE
    settings = dict(guidance_scale=cfg, context_length=context_length, context_overlap=context_overlap, dtype=dtype)

    def peak(**changes):
        return lambda: memory.sampling_peak(frames, height, width, **{**settings, **changes})

    fixes = {}
    if frames > WINDOW + 1 and (context_length is None or context_length > WINDOW):
        fixes[f"context_length {WINDOW}"] = peak(context_length=WINDOW, context_overlap=min(context_overlap, WINDOW - 1))
    if cfg > 1:
        fixes["cfg 1 (no negative pass)"] = peak(guidance_scale=1.0)
    if dtype == torch.float32:
        fixes["Model Loader dtype fp16"] = peak(dtype=torch.float16)
    return peak(), fixes


NODE_CLASS_MAPPINGS = {
    "PoseCrafterDDIMInverter": DDIMInverter,
    "PoseCrafterLatentEditor": LatentEditor,
    "PoseCrafterTemporalSampler": TemporalSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PoseCrafterDDIMInverter": "PoseCrafter DDIM Inverter",
    "PoseCrafterLatentEditor": "PoseCrafter Latent Editor",
    "PoseCrafterTemporalSampler": "PoseCrafter Temporal Sampler",
}
