"""Small conversions shared by the nodes: ComfyUI's types in, the engine's arguments out."""
import torch

from ..posecrafter import memory
from ..posecrafter.skeleton import SkeletonVideo
from . import _comfy

CATEGORY = "PoseCrafter"
MODEL_TYPE = "POSECRAFTER_MODEL"
INVERSION_TYPE = "POSECRAFTER_INVERSION"


def prompt_embeds(conditioning, input_name, text_width):
    """The [1,77,text_width] text embedding inside a CONDITIONING from CLIP Text Encode (a copy)."""
    if not isinstance(conditioning, list) or not conditioning or not torch.is_tensor(conditioning[0][0]):
        raise ValueError(f"'{input_name}' is not a CONDITIONING: connect a CLIP Text Encode (Prompt) node")
    if len(conditioning) > 1:
        raise ValueError(
            f"'{input_name}' holds {len(conditioning)} conditionings (e.g. from Conditioning Combine) but PoseCrafter "
            "takes one prompt: connect a single CLIP Text Encode (Prompt) node"
        )
    if "control" in conditioning[0][1]:
        raise ValueError(
            f"'{input_name}' carries a ComfyUI ControlNet (Apply ControlNet), which PoseCrafter would ignore: it uses "
            "the OpenPose ControlNet of its Model Loader. Connect the CLIP Text Encode (Prompt) node directly"
        )
    embeds = conditioning[0][0]
    if embeds.ndim != 3 or embeds.shape[-1] != text_width:
        raise ValueError(
            f"'{input_name}' has text embeddings of shape {tuple(embeds.shape)} but the model needs "
            f"[1,77,{text_width}]: encode the prompt with the CLIP of an SD1.5 checkpoint (not SD2/SDXL)"
        )
    return embeds[:1].clone()


def latent_samples(latent, input_name):
    """The unscaled latents [F,4,h,w] of a LATENT (a copy; the input is never modified)."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim != 4 or samples.shape[1] != 4:
        shape = None if samples is None else tuple(samples.shape)
        raise ValueError(
            f"'{input_name}' must be an SD1.5 LATENT [frames,4,h,w] (from VAE Encode), got {shape}"
        )
    return samples.clone()


def check_frame_count(count, expected, input_name, other_name):
    if count != expected:
        raise ValueError(f"'{input_name}' has {count} frames but '{other_name}' has {expected}: they must match")


def validation_result(check):
    """What VALIDATE_INPUTS returns for a check that raises ValueError: True, or the error's message."""
    try:
        check()
    except ValueError as err:
        return str(err)
    return True


def context_window_problem(context_length, context_overlap):
    """What is wrong with the Temporal Sampler's sliding-window widgets, said in their terms, or None."""
    if context_length < 0:
        return f"'context_length' is {context_length}: use 0 (all frames in one window) or the frames per window, e.g. 16"
    if context_overlap < 0:
        return f"'context_overlap' is {context_overlap}: use 0 (windows side by side) or more"
    if context_length and context_overlap >= context_length:
        return (
            f"'context_overlap' ({context_overlap}) must be smaller than 'context_length' ({context_length}): "
            f"windows of {context_length} frames that share {context_overlap} with the next one never move on. Set "
            f"context_overlap to {context_length - 1} or less (about a quarter works well, e.g. 4 of 16), or "
            "context_length to 0 to sample all frames in one window"
        )
    return None


LATENT_SCALE = 8  # pixels per latent pixel (SD1.5 VAE)
_reported_crops = set()


def poses_for_latents(poses, latent_height, latent_width):
    """The poses on the pixel canvas of latents [..., h, w] (8h x 8w pixels).

    ComfyUI's VAE Encode crops a frame whose size is not a multiple of 8 to the centred multiple of 8
    (comfy/sd.py vae_encode_crop_pixels: (size % 8) // 2 pixels off the left/top, the rest off the
    right/bottom). Poses on such a frame's canvas are cropped the same way (logged once per frame size), so
    they stay on the pixels they were detected on; poses on any other canvas are rescaled to it.
    """
    width, height = latent_width * LATENT_SCALE, latent_height * LATENT_SCALE
    size = (poses.canvas_width, poses.canvas_height)
    if size == (width, height):
        return poses
    if (size[0] // LATENT_SCALE, size[1] // LATENT_SCALE) != (latent_width, latent_height):
        return poses.on_canvas(width, height)
    left, top = (size[0] % LATENT_SCALE) // 2, (size[1] % LATENT_SCALE) // 2
    if size not in _reported_crops:
        _reported_crops.add(size)
        _comfy.log.info(
            "PoseCrafter: the frames are %dx%d pixels, not a multiple of 8; VAE Encode cropped them to %dx%d "
            "(%d px off the left, %d off the right, %d off the top, %d off the bottom) and the poses are cropped the "
            "same way. Resize the frames to a multiple of 8 to keep every pixel.",
            size[0], size[1], width, height, left, size[0] - width - left, top, size[1] - height - top,
        )
    return poses.cropped(left, top, width, height)


def pose_images_for(poses, samples, device="cpu"):
    """The ControlNet's skeleton images [F,3,8h,8w] for latents [F,4,h,w] (see poses_for_latents), drawn when
    the engine asks for a window's or clip's frames and handed over on `device` (a SkeletonVideo), so a long
    video holds only its keypoints."""
    height, width = samples.shape[-2:]
    return SkeletonVideo(poses_for_latents(poses, height, width), width * LATENT_SCALE, height * LATENT_SCALE, device)


class NotEnoughGPUMemory(RuntimeError):
    """A run stopped before its first step because its memory estimate exceeds the free GPU memory."""


def _gib(size):
    return f"{size / 2**30:.1f} GiB"


def check_gpu_memory(device, what, estimate, fixes):
    """Stop a run on a CUDA `device` before any work when `estimate()` (bytes, posecrafter/memory.py) plus its
    margin exceeds the free memory, naming both and what each of `fixes` ({setting: estimate with it}) saves.
    Nothing is checked on other devices; an estimate that fails is logged and the run goes on."""
    if device.type != "cuda":
        return
    try:
        estimated = estimate()
        need = memory.with_margin(estimated)
        free = _comfy.free_gpu_memory(device)
    except Exception as error:  # the estimate must never block a run
        _comfy.log.warning("PoseCrafter: could not estimate the GPU memory of %s (%s: %s); running without the check",
                           what, type(error).__name__, error)
        return
    if need <= free:
        return
    savings = []
    for setting, alternative in fixes.items():
        try:
            with_fix = memory.with_margin(alternative())
        except Exception as error:
            _comfy.log.warning("PoseCrafter: could not estimate %s with %s (%s)", what, setting, error)
            continue
        if with_fix < need:
            savings.append(f"{setting}: -{_gib(need - with_fix)}" + (" (then it fits)" if with_fix <= free else ""))
    advice = ("; ".join(savings) if savings else "none of this node's settings saves enough; free the GPU of other "
              "programs, or use a smaller frame size")
    raise NotEnoughGPUMemory(
        f"{what} needs about {_gib(need)} of GPU memory (estimate {_gib(estimated)} + margin {_gib(need - estimated)}) but "
        f"{_gib(free)} are free on {device}: stopped before the first step. What saves memory: {advice}")
