"""Pose retargeting node: the driving poses with the trained person's proportions (issue 9)."""
import numpy as np
import torch

from ..posecrafter import retarget, skeleton
from ..posecrafter.pose import from_pose_keypoint, to_pose_keypoint
from . import _comfy
from .common import CATEGORY

PREVIEW_HEIGHT = 256
PREVIEW_FRAMES = 32  # at most: a long video's preview costs no more memory or PNG writes than 32 frames
TRAINING_DIMMING = 0.35


class PoseRetarget:
    DESCRIPTION = (
        "Gives the driving video's poses the training person's proportions (bone lengths, head and hand size) "
        "and moves them onto the training canvas where the training person stands, keeping the driving motion. "
        "Put it between the driving video's DWPose Extractor and the Reference Frame Selector."
    )
    CATEGORY = CATEGORY + "/pose"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE", "STRING")
    RETURN_NAMES = ("pose", "preview", "report")
    OUTPUT_TOOLTIPS = (
        "The retargeted poses, one per target frame, on the training canvas (mode off: the target poses).",
        f"Up to {PREVIEW_FRAMES} frames, evenly spaced from the first to the last: the target pose (left) and the "
        "retargeted pose over the training person's first pose, dimmed (right).",
        "Scales, bone ratios, the fallbacks used for bones seen in only one video, and empty frames.",
    )
    FUNCTION = "retarget"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "target_pose": ("POSE_KEYPOINT", {"tooltip": "The driving video's poses (the motion to follow)."}),
                "training_pose": ("POSE_KEYPOINT", {"tooltip": "The training video's poses (the person whose proportions and place to keep), e.g. from the DWPose Extractor of the training frames."}),
                "mode": (list(retarget.MODES), {"default": "bones", "tooltip": "bones: every bone keeps the driving direction and takes the training person's length (face and hands scaled too). global: one scale (the torso ratio) and a shift only. off: the target poses unchanged."}),
                "anchor": (list(retarget.ANCHORS), {"default": "auto", "tooltip": "What of the first target frame lands where the training person stands; the motion's path follows from there. ground: the feet's ground line (full-body videos). neck: the neck (half-body videos). auto: ground when both videos show the feet in at least half of their frames, else neck."}),
                "smoothing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Temporal smoothing of the target poses against detection jitter (One Euro filter): 0 off, 1 strongest. Still poses stay unchanged; fast motion lags slightly at high values."}),
            }
        }

    def retarget(self, target_pose, training_pose, mode, anchor, smoothing):
        for value, name in ((target_pose, "target_pose"), (training_pose, "training_pose")):
            if not value:
                raise ValueError(f"'{name}' has no frames: connect the poses of a video (a DWPose Extractor's pose)")
        driving = from_pose_keypoint(target_pose, "target_pose")
        training = from_pose_keypoint(training_pose, "training_pose")
        result = retarget.retarget_poses(driving, training, mode=mode, anchor=anchor, smoothing=smoothing,
                                         names=("target_pose", "training_pose"))
        report = result.report()
        _comfy.log.info("PoseCrafter: %s", report)
        return to_pose_keypoint(result.poses), retarget_preview(driving, result.poses, training), report


def preview_frames(count):
    """The frames the preview shows: all of a short video, else PREVIEW_FRAMES evenly spaced, first and last
    included."""
    return np.unique(np.linspace(0, count - 1, min(count, PREVIEW_FRAMES)).round().astype(int)).tolist()


def retarget_preview(driving, retargeted, training):
    """IMAGE [n, PREVIEW_HEIGHT, W, 3] for the frames of :func:`preview_frames`: each driving pose beside its
    retargeted pose, which is drawn over the training person's first pose (dimmed); each panel keeps its
    canvas's aspect ratio."""
    def width(poses):
        return max(1, round(PREVIEW_HEIGHT * poses.canvas_width / poses.canvas_height))

    first_person = next(f for f in range(len(training)) if f not in set(training.empty_frames))
    backdrop = skeleton.render_skeleton(training, first_person, width(retargeted), PREVIEW_HEIGHT) * TRAINING_DIMMING
    frames = []
    for f in preview_frames(len(driving)):
        left = skeleton.render_skeleton(driving, f, width(driving), PREVIEW_HEIGHT)
        drawn = skeleton.render_skeleton(retargeted, f, width(retargeted), PREVIEW_HEIGHT)
        right = np.where(drawn.any(axis=-1, keepdims=True), drawn, backdrop.astype(np.uint8))
        frames.append(np.concatenate([left, right], axis=1))
    return torch.from_numpy(np.stack(frames)).float() / 255.0


NODE_CLASS_MAPPINGS = {"PoseCrafterPoseRetarget": PoseRetarget}
NODE_DISPLAY_NAME_MAPPINGS = {"PoseCrafterPoseRetarget": "PoseCrafter Pose Retarget"}
