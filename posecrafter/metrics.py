"""Evaluation metrics of the paper (spec 6): MSE-P, PSNR, SSIM, CLIP-I and CLIP-T, frame by frame.

Frames are ComfyUI IMAGE batches [F, H, W, 3] of RGB floats in 0..1; poses are PoseSequences. Every
per-frame value is kept, so a caller can say which frames are worst and not only the mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from kornia.metrics import psnr as kornia_psnr
from kornia.metrics import ssim as kornia_ssim

from .pose import BODY, FACE, LEFT_HAND, RIGHT_HAND, PoseSequence

# The parts MSE-P is reported for. "all" is every point POSE_KEYPOINT carries (feet are not in the format,
# so a target pose read from it never has them).
POSE_PARTS = {
    "all": np.r_[BODY, FACE, LEFT_HAND, RIGHT_HAND],
    "body": np.r_[BODY],
    "face": np.r_[FACE],
    "hands": np.r_[LEFT_HAND, RIGHT_HAND],
}
SSIM_WINDOW = 11  # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5 (kornia's kernel for this size)
FRAMES_PER_CHUNK = 8  # frames per SSIM convolution and per embedding call, which bounds memory


@dataclass(frozen=True)
class PoseError:
    """MSE-P per frame and part (spec 6): the mean over the points visible in both poses of the squared
    distance in normalised canvas units, (dx/W)^2 + (dy/H)^2, each pose normalised by its own canvas.

    per_frame[part]: [F] floats, NaN where no point of the part is visible in both poses.
    points[part]: [F] ints, how many points were compared (0 exactly where per_frame is NaN).
    missing_in_generated[part] / missing_in_target[part]: frames where that side has no visible point
    of the part (a frame can be in both lists).
    """

    per_frame: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    missing_in_generated: dict[str, list[int]]
    missing_in_target: dict[str, list[int]]

    def mean(self, part: str = "all") -> float:
        """The paper's MSE-P: the per-frame values averaged over the frames where they were measured
        (NaN when none was)."""
        values = self.per_frame[part]
        measured = values[~np.isnan(values)]
        return float(measured.mean()) if measured.size else float("nan")


def pose_error(generated: PoseSequence, target: PoseSequence) -> PoseError:
    """MSE-P between the poses found in the generated frames and the poses they had to follow."""
    if len(generated) != len(target):
        raise ValueError(
            f"generated: {len(generated)} poses but target has {len(target)}; compare the poses of the same frames"
        )
    generated_xy = generated.points / [generated.canvas_width, generated.canvas_height]
    target_xy = target.points / [target.canvas_width, target.canvas_height]
    squared = ((generated_xy - target_xy) ** 2).sum(axis=-1)  # [F, 134]
    per_frame, points, missing_generated, missing_target = {}, {}, {}, {}
    for part, indices in POSE_PARTS.items():
        both = generated.visible[:, indices] & target.visible[:, indices]
        points[part] = both.sum(axis=1)
        with np.errstate(invalid="ignore"):  # 0/0 -> NaN for frames with nothing to compare
            per_frame[part] = np.where(both, squared[:, indices], 0.0).sum(axis=1) / points[part]
        missing_generated[part] = [int(f) for f in np.flatnonzero(~generated.visible[:, indices].any(axis=1))]
        missing_target[part] = [int(f) for f in np.flatnonzero(~target.visible[:, indices].any(axis=1))]
    return PoseError(per_frame, points, missing_generated, missing_target)


def _as_nchw(frames: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(frames) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = list(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
        raise ValueError(f"{name}: expected an IMAGE batch [F, H, W, 3] of RGB floats in 0..1, got {shape}")
    return frames.float().permute(0, 3, 1, 2)


def _checked_pair(generated: torch.Tensor, ground_truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    generated, ground_truth = _as_nchw(generated, "generated"), _as_nchw(ground_truth, "ground_truth")
    if generated.shape != ground_truth.shape:
        raise ValueError(
            f"ground_truth: {ground_truth.shape[0]} frames of {ground_truth.shape[3]}x{ground_truth.shape[2]} but "
            f"generated has {generated.shape[0]} frames of {generated.shape[3]}x{generated.shape[2]}; "
            "compare frames of the same count and size"
        )
    return generated, ground_truth.to(generated.device)


def psnr(generated: torch.Tensor, ground_truth: torch.Tensor) -> np.ndarray:
    """PSNR in dB per frame (spec 6: in float; 0..1 frames give the same value as 0..255 ones). Identical
    frames give inf."""
    generated, ground_truth = _checked_pair(generated, ground_truth)
    return np.array([kornia_psnr(g, t, max_val=1.0).item() for g, t in zip(generated, ground_truth)])


def ssim(generated: torch.Tensor, ground_truth: torch.Tensor,
         callback: Callable[[int, int], None] | None = None) -> np.ndarray:
    """SSIM per frame (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, the mean over
    the window positions inside the frame and over the three channels), in float32 on the frames' device.
    ``callback(done, total)`` after each chunk of frames; an exception raised there cancels."""
    generated, ground_truth = _checked_pair(generated, ground_truth)
    values = []
    for start in range(0, len(generated), FRAMES_PER_CHUNK):
        chunk = slice(start, start + FRAMES_PER_CHUNK)
        ssim_map = kornia_ssim(generated[chunk], ground_truth[chunk], SSIM_WINDOW, max_val=1.0, padding="valid")
        values.append(ssim_map.mean(dim=(1, 2, 3)).double().cpu())
        if callback is not None:
            callback(min(start + FRAMES_PER_CHUNK, len(generated)), len(generated))
    return torch.cat(values).numpy()


@dataclass(frozen=True)
class ClipConsistency:
    """CLIP-I and CLIP-T (spec 6; spec 9 #14, #15).

    clip_i_per_frame: [F] mean cosine between each generated frame and every reference (training) frame.
    clip_t_per_pair: [F-1] cosine between generated frames f and f+1.
    clip_i, clip_t: their means (NaN when there is nothing to average: no reference frames, or a single
    generated frame, which has no pair).
    """

    clip_i_per_frame: np.ndarray
    clip_t_per_pair: np.ndarray

    @property
    def clip_i(self) -> float:
        return float(self.clip_i_per_frame.mean()) if self.clip_i_per_frame.size else float("nan")

    @property
    def clip_t(self) -> float:
        return float(self.clip_t_per_pair.mean()) if self.clip_t_per_pair.size else float("nan")


def image_embeddings(embed_images: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor,
                     name: str) -> torch.Tensor:
    """Unit-length embeddings [F, D] (float64, CPU) of an IMAGE batch, ``embed_images`` called on chunks."""
    _as_nchw(frames, name)
    chunks = []
    for start in range(0, len(frames), FRAMES_PER_CHUNK):
        embeds = embed_images(frames[start : start + FRAMES_PER_CHUNK])
        chunk = len(frames[start : start + FRAMES_PER_CHUNK])
        if not torch.is_tensor(embeds) or embeds.ndim != 2 or embeds.shape[0] != chunk:
            shape = list(embeds.shape) if torch.is_tensor(embeds) else type(embeds).__name__
            raise ValueError(f"embed_images: expected embeddings [{chunk}, D] for {chunk} frames of {name}, got {shape}")
        chunks.append(embeds.detach().double().cpu())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def clip_consistency(embed_images: Callable[[torch.Tensor], torch.Tensor], generated: torch.Tensor,
                     reference_frames: torch.Tensor | None) -> ClipConsistency:
    """CLIP-I (faithfulness to the reference frames) and CLIP-T (temporal consistency, consecutive pairs).

    ``embed_images`` takes an IMAGE batch and returns one embedding per frame ([B, D] tensor), e.g. a CLIP
    vision model's projected image embeddings. Without ``reference_frames`` CLIP-I is left empty.
    """
    frames = image_embeddings(embed_images, generated, "generated")
    if reference_frames is None:
        clip_i = np.zeros(0)
    else:
        references = image_embeddings(embed_images, reference_frames, "reference_frames")
        clip_i = (frames @ references.T).mean(dim=1).numpy()
    clip_t = (frames[:-1] * frames[1:]).sum(dim=-1).numpy()
    return ClipConsistency(clip_i, clip_t)
