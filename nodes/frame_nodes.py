"""Frame selection: the training set, N frames of the clip at the paper's uniform stride or covering the target motion."""
from ..posecrafter.pose import from_pose_keypoint
from ..posecrafter.training_frames import select_covering_frames, uniform_indices
from . import _comfy
from .common import CATEGORY, check_frame_count

MODES = ("uniform", "cover")


class SelectFrames:
    DESCRIPTION = (
        "Keeps N frames of the training clip. 'uniform': frames 0, s, 2s, ... with stride s = floor(P/N) for a "
        "clip of P frames, as the paper builds its training set. 'cover': the N frames whose poses cover the "
        "target poses best (lowest Video-SIM); it needs the poses of every training frame and the target poses. "
        "Fewer frames tune in fewer steps (tuning memory is set by its 8-frame clips) and take less RAM."
    )
    CATEGORY = CATEGORY + "/tuning"
    RETURN_TYPES = ("IMAGE", "POSE_KEYPOINT")
    RETURN_NAMES = ("images", "pose")
    OUTPUT_TOOLTIPS = (
        "The N selected frames, in their original order.",
        "The selected frames' poses (taken from training_pose; empty when training_pose is not connected).",
    )
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The training video's frames."}),
                "frames": ("INT", {"default": 8, "min": 0, "max": 100000, "tooltip": "How many frames to tune on (N); 0 keeps them all. With steps 0 the tuner runs the paper's step count for N (Eq. 20): 8 frames (the paper's main setting) 100 steps, 16 frames 265, 32 frames 596, 100 frames 2000."}),
            },
            "optional": {
                "mode": (list(MODES), {"default": "uniform", "tooltip": "uniform: evenly spaced frames (the paper). cover: the frames whose poses are closest to the target poses, for a training clip with more varied motion than N evenly spaced frames show; needs training_pose and target_pose."}),
                "training_pose": ("POSE_KEYPOINT", {"tooltip": "The poses of every frame of 'images' (DWPose Extractor on the whole training video). Needed by cover; with uniform, the selected frames' poses are passed on."}),
                "target_pose": ("POSE_KEYPOINT", {"tooltip": "The pose sequence to follow (e.g. the driving video's poses). Needed by cover only."}),
            },
        }

    def select(self, images, frames, mode="uniform", training_pose=None, target_pose=None):
        total = images.shape[0]
        if mode not in MODES:
            raise ValueError(f"'mode' is {mode!r}: use one of {', '.join(MODES)}")
        if frames > total:
            raise ValueError(
                f"'frames' is {frames} but the training video has only {total} frames: set frames to {total} or "
                "fewer (0 keeps all), or use a longer video"
            )
        if training_pose is not None:
            check_frame_count(len(training_pose), total, "training_pose", "images")
        count = frames or total
        if count == total:
            indices = list(range(total))
        elif mode == "cover":
            for name, value in (("training_pose", training_pose), ("target_pose", target_pose)):
                if not value:
                    raise ValueError(
                        f"'{name}' is not connected: cover mode needs the poses of every training frame "
                        "(training_pose, from a DWPose Extractor on the whole training video) and the target "
                        "poses (target_pose); connect both or use mode 'uniform'"
                    )
            training = from_pose_keypoint(training_pose, "training_pose")
            with_person = total - len(training.empty_frames)
            if count > with_person:
                raise ValueError(
                    f"'frames' is {frames} but only {with_person} training frames show a person (none in frames "
                    f"{training.empty_frames}): set frames to {with_person} or fewer, or turn on fill_gaps on the "
                    "training video's DWPose Extractor"
                )
            indices = select_covering_frames(training, from_pose_keypoint(target_pose, "target_pose"), count)
        else:
            indices = uniform_indices(total, count)
        if count < total:
            _comfy.log.info("PoseCrafter: training frames (%s) %s of %d", mode, indices, total)
        poses = [training_pose[i] for i in indices] if training_pose is not None else []
        return (images[indices], poses)


NODE_CLASS_MAPPINGS = {"PoseCrafterSelectFrames": SelectFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"PoseCrafterSelectFrames": "PoseCrafter Select Frames"}
