"""Small conversions shared by the nodes: ComfyUI's types in, the engine's arguments out."""
import torch

from ..posecrafter.skeleton import SkeletonVideo

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


def pose_images_for(poses, samples, device="cpu"):
    """The ControlNet's skeleton images [F,3,8h,8w] for latents [F,4,h,w] (8 pixels per latent pixel), drawn
    when the engine asks for a window's or clip's frames and handed over on `device` (a SkeletonVideo), so a
    long video holds only its keypoints."""
    return SkeletonVideo(poses, samples.shape[-1] * 8, samples.shape[-2] * 8, device)
