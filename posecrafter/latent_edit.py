"""Affine latent editing of face and hands (Eq. 18-19, spec 5.4 and 9 #10-13).

For every target frame, each part (face, left hand, right hand) gets a 6-DOF least-squares affine
from the reference pose's landmarks to the target's, in latent coordinates; the whole reference
latent is warped with it and the box around the target landmarks is pasted into the frame's latent.

The plan (``plan_latent_edits``) depends only on the poses and the latent size; applying it
(``apply_latent_edits``) pastes warped reference patches into any latents, so the same plan serves
alpha = 1 (``edit_initial_latents``) and alpha > 1 (``alpha_edit_hook``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from kornia.geometry.transform import warp_affine

from .pose import FACE, LEFT_HAND, RIGHT_HAND, PoseSequence

VAE_DOWNSCALE = 8
# Edited in this order, later boxes overwriting earlier ones (spec 9 #11), with the fewest common
# visible landmarks a fit needs (spec 5.4.7).
PARTS = (("face", FACE, 3), ("left hand", LEFT_HAND, 6), ("right hand", RIGHT_HAND, 6))
DETERMINANT_RANGE = (0.25, 4.0)


@dataclass(frozen=True)
class PartEdit:
    """One part of one target frame: either an affine + box to paste, or the reason it was skipped.

    affine: [2, 3] reference -> target map in latent pixel coordinates.
    box: (x0, y0, x1, y1), inclusive latent pixel bounds of the pasted region.
    """

    part: str
    affine: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    skip_reason: str | None = None


@dataclass(frozen=True)
class LatentEditPlan:
    """Edits for every frame of the M+1 sequence; the reference frame's list is always empty."""

    latent_height: int
    latent_width: int
    reference_index: int
    frames: tuple[tuple[PartEdit, ...], ...]

    def report(self) -> list[str]:
        """One line per frame saying what was edited or skipped and why."""
        lines = []
        for f, edits in enumerate(self.frames):
            if f == self.reference_index:
                lines.append(f"frame {f}: inserted reference, not edited")
                continue
            parts = []
            for edit in edits:
                if edit.skip_reason is None:
                    x0, y0, x1, y1 = edit.box
                    parts.append(f"{edit.part} edited (latent box x {x0}..{x1}, y {y0}..{y1})")
                else:
                    parts.append(f"{edit.part} skipped: {edit.skip_reason}")
            lines.append(f"frame {f}: " + "; ".join(parts))
        return lines


def to_latent_coordinates(pixels: np.ndarray) -> np.ndarray:
    """Pixel to latent coordinates with pixel-centre alignment: u = (x + 0.5) / 8 - 0.5 (spec 9 #10)."""
    return (pixels + 0.5) / VAE_DOWNSCALE - 0.5


def fit_affine(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """6-DOF least squares A = argmin sum_j ||A [r_j; 1] - t_j||^2 (spec 5.4.2) with the degeneracy checks
    of spec 5.4.7. Returns (A [2, 3], None), or (None, why it cannot be used)."""
    design = np.column_stack([source, np.ones(len(source))])
    solution, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    if rank < 3:
        return None, "rank-deficient fit (landmarks are collinear or coincide)"
    affine = solution.T
    determinant = abs(np.linalg.det(affine[:, :2]))
    low, high = DETERMINANT_RANGE
    if not low <= determinant <= high:
        return None, f"|det| of the affine is {determinant:.3g}, outside [{low}, {high}]"
    return affine, None


def plan_latent_edits(poses: PoseSequence, latent_height: int, latent_width: int) -> LatentEditPlan:
    """Plan the face/hand edits for the M+1 sequence made by ``insert_reference_pose`` (spec 5.4).

    The pose canvas is scaled to the latent's pixel size (latent_width * 8, latent_height * 8), so the
    two must have the same aspect ratio (within one latent pixel).
    """
    if poses.inserted_reference is None:
        raise ValueError("poses: no inserted reference pose; pass the M+1 sequence returned by insert_reference_pose")
    if latent_height < 1 or latent_width < 1:
        raise ValueError(f"latent_height/latent_width: must be positive, got {latent_height}x{latent_width}")
    pixel_width, pixel_height = latent_width * VAE_DOWNSCALE, latent_height * VAE_DOWNSCALE
    matching_height = poses.canvas_height * pixel_width / poses.canvas_width
    if abs(matching_height - pixel_height) > VAE_DOWNSCALE:
        raise ValueError(
            f"the {latent_width}x{latent_height} reference latent ({pixel_width}x{pixel_height} px) does not match "
            f"the aspect ratio of the poses' canvas {poses.canvas_width}x{poses.canvas_height}; generate at a size "
            "with the poses' aspect ratio, or crop/resize the pose frames to the generation size"
        )
    scale = np.array([pixel_width / poses.canvas_width, pixel_height / poses.canvas_height])
    latent_points = to_latent_coordinates(poses.points * scale)

    k = poses.inserted_reference
    frames = []
    for f in range(len(poses)):
        if f == k:
            frames.append(())
            continue
        edits = []
        for name, part, min_points in PARTS:
            common = poses.visible[k, part] & poses.visible[f, part]
            source, target = latent_points[k, part][common], latent_points[f, part][common]
            edits.append(_plan_part(name, source, target, min_points, latent_height, latent_width))
        frames.append(tuple(edits))
    return LatentEditPlan(latent_height, latent_width, k, tuple(frames))


def _plan_part(name: str, source: np.ndarray, target: np.ndarray, min_points: int, latent_height: int,
               latent_width: int) -> PartEdit:
    if len(source) < min_points:
        return PartEdit(name, skip_reason=f"{len(source)} common visible landmarks, need at least {min_points}")
    affine, reason = fit_affine(source, target)
    if affine is None:
        return PartEdit(name, skip_reason=reason)
    x0 = max(math.floor(target[:, 0].min()), 0)
    y0 = max(math.floor(target[:, 1].min()), 0)
    x1 = min(math.ceil(target[:, 0].max()), latent_width - 1)
    y1 = min(math.ceil(target[:, 1].max()), latent_height - 1)
    if x1 < x0 or y1 < y0:
        return PartEdit(name, skip_reason="box around the target landmarks is smaller than 1x1 inside the latent")
    return PartEdit(name, affine=affine, box=(x0, y0, x1, y1))


def warp_reference_latent(reference_latent: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
    """Z~(q) = Z_ref(A^-1 q) for each A (spec 5.4.3): [C, h, w] and [n, 2, 3] -> [n, C, h, w].
    Bilinear, replicate border, pixel-centre coordinates (as cv2.warpAffine with the forward matrix).
    Computed on the CPU in float64 (latents are small; every device supports it there), so an
    identity warp returns the latent unchanged."""
    channels, height, width = reference_latent.shape
    source = reference_latent.detach().cpu().double().unsqueeze(0).expand(len(affines), channels, height, width)
    return warp_affine(source, affines.cpu().double(), (height, width), mode="bilinear", padding_mode="border",
                       align_corners=True)


def apply_latent_edits(reference_latent: torch.Tensor, latents: torch.Tensor, plan: LatentEditPlan) -> torch.Tensor:
    """Paste the plan's warped reference patches into a copy of ``latents`` [M+1, C, h, w].

    reference_latent: [C, h, w] or [1, C, h, w], the unedited reference latent every warp starts from.
    Frames without edits (the reference frame k, skipped parts) are left as they are.
    """
    if reference_latent.dim() == 4 and reference_latent.shape[0] == 1:
        reference_latent = reference_latent[0]
    size = (plan.latent_height, plan.latent_width)
    if reference_latent.dim() != 3 or tuple(reference_latent.shape[-2:]) != size:
        raise ValueError(
            f"reference_latent: expected [C, {size[0]}, {size[1]}] (the plan's latent size), "
            f"got {list(reference_latent.shape)}"
        )
    if latents.dim() != 4 or latents.shape[0] != len(plan.frames) or tuple(latents.shape[-2:]) != size:
        raise ValueError(
            f"latents: expected [{len(plan.frames)}, C, {size[0]}, {size[1]}] (M+1 frames at the plan's latent size), "
            f"got {list(latents.shape)}"
        )
    if latents.shape[1] != reference_latent.shape[0]:
        raise ValueError(
            f"latents: have {latents.shape[1]} channels but reference_latent has {reference_latent.shape[0]}"
        )
    edits = [(f, edit) for f, frame_edits in enumerate(plan.frames) for edit in frame_edits if edit.affine is not None]
    edited = latents.clone()
    if not edits:
        return edited
    affines = torch.from_numpy(np.stack([edit.affine for _, edit in edits]))
    warped = warp_reference_latent(reference_latent, affines).to(dtype=latents.dtype, device=latents.device)
    for (f, edit), patch in zip(edits, warped):
        x0, y0, x1, y1 = edit.box
        edited[f, :, y0 : y1 + 1, x0 : x1 + 1] = patch[:, y0 : y1 + 1, x0 : x1 + 1]
    return edited


def edit_initial_latents(reference_latent: torch.Tensor, plan: LatentEditPlan) -> torch.Tensor:
    """alpha = 1 (spec 5.3, 5.4): M+1 copies of Z_T^ref with every target frame edited; frame k untouched."""
    if reference_latent.dim() == 4 and reference_latent.shape[0] == 1:
        reference_latent = reference_latent[0]
    copies = reference_latent.unsqueeze(0).repeat(len(plan.frames), *([1] * reference_latent.dim()))
    return apply_latent_edits(reference_latent, copies, plan)


def alpha_edit_hook(
    plan: LatentEditPlan, reference_latent_at: Callable[[int], torch.Tensor], alpha: int
) -> Callable[[int, int, torch.Tensor], torch.Tensor]:
    """alpha > 1 (spec 9 #12): a ``step_hook(step_index, timestep, latents)`` for the DDIM sampler, called
    before every denoising step. Before the alpha-th step (step_index == alpha - 1) it pastes patches
    warped from ``reference_latent_at(timestep)``, the reference's inversion latent at that timestep;
    at every other step it returns the latents unchanged."""
    if int(alpha) != alpha or alpha < 2:
        raise ValueError(
            f"alpha: the hook is for editing at DDIM step alpha >= 2, got {alpha}; for alpha = 1 edit the initial "
            "latents with edit_initial_latents"
        )

    def step_hook(step_index: int, timestep: int, latents: torch.Tensor) -> torch.Tensor:
        if step_index != alpha - 1:
            return latents
        return apply_latent_edits(reference_latent_at(timestep), latents, plan)

    return step_hook
