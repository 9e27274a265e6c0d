"""Frame selection: the training set as the paper builds it, N frames taken evenly from the clip."""
from . import _comfy
from .common import CATEGORY


def uniform_indices(total, count):
    """Indices 0, s, 2s, ... of `count` frames out of `total`, with stride s = floor(total / count)."""
    stride = total // count
    return list(range(0, stride * count, stride))


class SelectFrames:
    DESCRIPTION = (
        "Keeps N evenly spaced frames of the training clip: frames 0, s, 2s, ... with stride s = floor(P/N) for a "
        "clip of P frames, as the paper builds its training set. Put it before DWPose and VAE Encode: fewer "
        "frames tune in fewer steps (tuning memory is set by its 8-frame clips) and take less RAM."
    )
    CATEGORY = CATEGORY + "/tuning"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The N selected frames, in their original order.",)
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The training video's frames."}),
                "frames": ("INT", {"default": 8, "min": 0, "max": 100000, "tooltip": "How many frames to tune on (N); 0 keeps them all. With steps 0 the tuner runs the paper's step count for N (Eq. 20): 8 frames (the paper's main setting) 100 steps, 16 frames 265, 32 frames 596, 100 frames 2000."}),
            }
        }

    def select(self, images, frames):
        total = images.shape[0]
        if frames > total:
            raise ValueError(
                f"'frames' is {frames} but the training video has only {total} frames: set frames to {total} or "
                "fewer (0 keeps all), or use a longer video"
            )
        if frames in (0, total):
            return (images,)
        indices = uniform_indices(total, frames)
        _comfy.log.info("PoseCrafter: training frames %s of %d", indices, total)
        return (images[indices],)


NODE_CLASS_MAPPINGS = {"PoseCrafterSelectFrames": SelectFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"PoseCrafterSelectFrames": "PoseCrafter Select Frames"}
