"""Evaluation: the paper's metrics of a generated video, frame by frame, as a text report and a plot."""
import numpy as np
import torch

from ..posecrafter import metrics
from ..posecrafter.pose import from_pose_keypoint
from ..posecrafter.reference import remove_inserted_reference
from . import _comfy
from .common import CATEGORY
from .plot import evaluation_image
from .pose_nodes import dwpose_files_found, run_dwpose

# ComfyUI's CLIP Vision Loader also loads SigLIP and DINO encoders; only CLIP ones normalise pixels with
# OpenAI CLIP's mean (an attribute every ComfyUI version has, unlike the model type).
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
WORST_FRAMES = 3


def _frames_text(frames):
    return ", ".join(str(f) for f in frames)


def _size(images):
    return f"{images.shape[0]} frames of {images.shape[2]}x{images.shape[1]}"


def clip_embedder(clip_vision):
    """embed_images for metrics.clip_consistency from a CLIP_VISION: its encode_image's projected embeddings."""
    if not callable(getattr(clip_vision, "encode_image", None)):
        raise ValueError(
            f"'clip_vision' is a {type(clip_vision).__name__}, not a CLIP vision model: connect a Load CLIP Vision node"
        )
    mean = getattr(clip_vision, "image_mean", None)
    if mean is None or not np.allclose(list(mean), CLIP_IMAGE_MEAN, atol=1e-4):
        raise ValueError(
            "'clip_vision' is not a CLIP model (its pixel normalisation is that of SigLIP or DINO, e.g. a Redux or "
            "3D image encoder): CLIP-I and CLIP-T are defined on CLIP image embeddings, so load a CLIP ViT file "
            "such as clip_vision_h.safetensors in Load CLIP Vision"
        )
    return lambda images: clip_vision.encode_image(images).image_embeds


def _evaluated_frames(images, poses):
    """The generated frames and target poses to compare, and a note on the inserted reference frame: the
    marked pose is left out, and so is its frame when the video still holds it (drop_inserted_frame off)."""
    count, k = images.shape[0], poses.inserted_reference
    if k is None:
        if len(poses) != count:
            raise ValueError(
                f"'target_pose' has {len(poses)} poses but 'images' has {count} frames: connect the poses the "
                "video was generated from (the driving video's poses, one per generated frame)"
            )
        return images, poses, ""
    if len(poses) == count:
        return (remove_inserted_reference(images, poses), remove_inserted_reference(poses, poses),
                f"Frame {k} of 'images', generated for the inserted reference pose, is left out.")
    if len(poses) == count + 1:
        return images, remove_inserted_reference(poses, poses), f"The inserted reference pose ({k}) of 'target_pose' is left out."
    raise ValueError(
        f"'target_pose' has {len(poses)} poses with the inserted reference but 'images' has {count} frames: "
        f"connect the poses the video was generated from ({count} target poses, or {count + 1} with the reference)"
    )


class Evaluate:
    DESCRIPTION = (
        "Measures a generated video as the paper does, frame by frame: pose error MSE-P (DWPose on the generated "
        "frames against the target poses, for body, face and hands), PSNR and SSIM against the real frames, "
        "CLIP-I (likeness to the training frames) and CLIP-T (consistency of consecutive frames). Metrics whose "
        "inputs are not connected are skipped."
    )
    CATEGORY = CATEGORY + "/evaluate"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("report", "plot")
    OUTPUT_TOOLTIPS = (
        "Every metric with what it means, which frames are worst, and a per-frame table.",
        "Pose error per frame by part, and PSNR per frame when ground truth is connected.",
    )
    FUNCTION = "evaluate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The generated video's frames (VAE Decode of the Temporal Sampler's output)."}),
                "target_pose": ("POSE_KEYPOINT", {"tooltip": "The poses the video had to follow, one per frame. A reference pose inserted by the Pose Inserter is recognised and left out."}),
            },
            "optional": {
                "ground_truth": ("IMAGE", {"tooltip": "The real frames with these poses (same count and size as 'images'), for PSNR and SSIM."}),
                "training_images": ("IMAGE", {"tooltip": "The frames the model was tuned on (Select Frames' output), for CLIP-I."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "A CLIP vision model from Load CLIP Vision, for CLIP-I and CLIP-T."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, images=None):
        return dwpose_files_found()

    def evaluate(self, images, target_pose, ground_truth=None, training_images=None, clip_vision=None):
        generated, target, reference_note = _evaluated_frames(images, from_pose_keypoint(target_pose, "target_pose"))
        if ground_truth is not None and ground_truth.shape != generated.shape:
            raise ValueError(
                f"'ground_truth' has {_size(ground_truth)} but 'images' has {_size(generated)}"
                f"{' (the inserted reference frame left out)' if reference_note else ''}: connect the real frames the "
                "video was generated for, scaled and cropped as the generated ones (e.g. with Upscale Image)"
            )
        embed_images = None if clip_vision is None else clip_embedder(clip_vision)

        found = run_dwpose(generated)
        pose_error = metrics.pose_error(found.poses, target)
        psnr = ssim = None
        if ground_truth is not None:
            device = _comfy.torch_device()
            psnr = metrics.psnr(generated.to(device), ground_truth.to(device))
            progress = _comfy.Progress(generated.shape[0], "PoseCrafter SSIM")
            try:
                ssim = metrics.ssim(generated.to(device), ground_truth.to(device),
                                    callback=lambda done, total: progress.update(done))
            finally:
                progress.close()
        clip = None
        if embed_images is not None:
            with torch.no_grad():
                clip = metrics.clip_consistency(embed_images, generated, training_images)

        notes = [reference_note] if reference_note else []
        if ground_truth is not None and training_images is not None:
            notes += overlap_note(ground_truth, training_images)
        report = format_report(generated, pose_error, found.missing_frames, psnr, ssim, clip, notes,
                               training_images is not None)
        _comfy.log.info("PoseCrafter evaluation:\n%s", report.split("\n\nPer frame")[0])  # the table stays in the report
        plot = evaluation_image(
            pose_error.per_frame, psnr,
            "no ground truth connected: PSNR and SSIM skipped" if psnr is None else "",
        )
        return report, plot


def _number(value, digits=4, scientific=False):
    if np.isnan(value):
        return "-"
    if np.isinf(value):
        return "inf"
    return f"{value:.{digits - 1}e}" if scientific else f"{value:.{digits}f}"


def _worst(values, highest_is_worst):
    """Frames ordered worst first (measured frames only), at most WORST_FRAMES of them."""
    measured = [f for f in range(len(values)) if not np.isnan(values[f])]
    ordered = sorted(measured, key=lambda f: -values[f] if highest_is_worst else values[f])
    return ordered[:WORST_FRAMES]


def overlap_note(ground_truth, training_images):
    """A warning naming the ground-truth frames that are exactly frames the model was tuned on (the evaluation
    part overlapping the training part), or nothing."""
    if ground_truth.shape[1:] != training_images.shape[1:]:
        return []
    training_sums = training_images.double().sum(dim=(1, 2, 3))  # a cheap first test; equality decides
    seen = [f for f, frame in enumerate(ground_truth)
            if any(torch.equal(frame, training_images[t])
                   for t in torch.nonzero(torch.isclose(training_sums, frame.double().sum())).flatten())]
    if not seen:
        return []
    return [f"Warning: ground-truth frame(s) {_frames_text(seen)} are frames the model was tuned on, so PSNR and SSIM "
            "there measure how well it reproduces its training data: evaluate on frames outside the training part "
            "(a clip shorter than the split point makes ImageFromBatch return its last frames)."]


def format_report(generated, pose_error, no_person, psnr, ssim, clip, notes, has_training):
    """The Evaluate node's text: summary with meanings, worst frames, skipped metrics, per-frame table;
    ``notes`` (lines) follow the first line."""
    frames = generated.shape[0]
    lines = [f"PoseCrafter evaluation of {_size(generated)}.", *notes]
    lines.append("Numbers compare only between runs at the same frame size and frame count.")
    lines += [
        "",
        "MSE-P, pose error (lower is better): mean squared distance between the DWPose keypoints of each generated "
        "frame and its target pose, over the points found in both, coordinates as fractions of the frame "
        "(x/W, y/H); its square root is the typical offset as a fraction of the frame size.",
    ]
    for part in metrics.POSE_PARTS:
        values = pose_error.per_frame[part]
        measured = int((~np.isnan(values)).sum())
        mean = pose_error.mean(part)
        offset = "" if np.isnan(mean) else f" (typical offset {100 * np.sqrt(mean):.1f}% of the frame)"
        line = f"  {part:<5} {_number(mean, scientific=True)}{offset} over {measured} of {frames} frames"
        gaps = []
        if part != "all":
            generated_gaps = [f for f in pose_error.missing_in_generated[part] if f not in no_person]
            if generated_gaps:
                gaps.append(f"no {part} found in generated frame(s) {_frames_text(generated_gaps)}")
            if pose_error.missing_in_target[part]:
                gaps.append(f"no {part} in the target pose of frame(s) {_frames_text(pose_error.missing_in_target[part])}")
        lines.append(line + ("; " + "; ".join(gaps) if gaps else ""))
    if no_person:
        lines.append(f"  no person found in generated frame(s) {_frames_text(no_person)}: pose error not measured there")

    skipped = []
    if psnr is not None:
        finite = psnr[np.isfinite(psnr)]
        lines += [
            f"PSNR (dB, higher is better): pixel fidelity to the real frames: mean {_number(float(np.mean(psnr)), 2)}"
            + ("" if finite.size == len(psnr) else " (inf: some frames are identical to the real ones)"),
            f"SSIM (0..1, higher is better): structural similarity to the real frames: mean {_number(float(np.mean(ssim)))}",
        ]
    else:
        skipped.append("PSNR and SSIM: connect the real frames to 'ground_truth'")
    if clip is not None:
        if has_training:
            lines.append(f"CLIP-I (cosine, higher is better): likeness of the generated frames to the training frames "
                         f"(identity, clothes, scene): {_number(clip.clip_i)}")
        else:
            skipped.append("CLIP-I: connect the training frames to 'training_images'")
        if frames > 1:
            lines.append(f"CLIP-T (cosine, higher is better): similarity of consecutive generated frames "
                         f"(temporal consistency): {_number(clip.clip_t)}")
        else:
            skipped.append("CLIP-T: needs at least 2 generated frames")
    else:
        skipped.append("CLIP-I and CLIP-T: connect a Load CLIP Vision node to 'clip_vision'"
                       + ("" if has_training else " and the training frames to 'training_images'"))

    pose_worst = [f"{part} {_frames_text(_worst(pose_error.per_frame[part], True))}"
                  for part in metrics.POSE_PARTS if _worst(pose_error.per_frame[part], True)]
    lines += ["", "Worst frames, worst first:", "  pose error: " + ("; ".join(pose_worst) or "none measured")]
    image_worst = []
    if psnr is not None:
        image_worst += [f"PSNR {_frames_text(_worst(psnr, False))}", f"SSIM {_frames_text(_worst(ssim, False))}"]
    if clip is not None and has_training:
        image_worst.append(f"CLIP-I {_frames_text(_worst(clip.clip_i_per_frame, False))}")
    if image_worst:
        lines.append("  " + "; ".join(image_worst))
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped) + "."]

    columns = ["frame", "MSE-P", "body", "face", "hands"]
    if psnr is not None:
        columns += ["PSNR", "SSIM"]
    if clip is not None:
        columns += (["CLIP-I"] if has_training else []) + ["CLIP-T"]
    lines += ["", "Per frame (MSE-P: all parts; CLIP-T: against the frame before; -: not measured):",
              "".join(f"{name:>11}" for name in columns)]
    for f in range(frames):
        row = [str(f)] + [_number(pose_error.per_frame[part][f], scientific=True) for part in metrics.POSE_PARTS]
        if psnr is not None:
            row += [_number(psnr[f], 2), _number(ssim[f])]
        if clip is not None:
            row += ([_number(clip.clip_i_per_frame[f])] if has_training else [])
            row += [_number(clip.clip_t_per_pair[f - 1]) if f > 0 else "-"]
        lines.append("".join(f"{value:>11}" for value in row))
    return "\n".join(lines)


NODE_CLASS_MAPPINGS = {"PoseCrafterEvaluate": Evaluate}
NODE_DISPLAY_NAME_MAPPINGS = {"PoseCrafterEvaluate": "PoseCrafter Evaluate"}
