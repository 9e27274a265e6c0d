"""Pose retargeting: the driving video's motion with the training person's proportions (issue 9).

The paper's limitations section: driven by another person's poses, the generated body takes that
person's arm and leg lengths, shoulder width and head size. ``retarget_poses`` moves the driving poses
onto the training canvas with the training person's proportions before reference selection and sampling.

Every one of the 134 points hangs from a parent in one tree rooted at the neck: the 17 OpenPose limbs
(``skeleton.LIMBS``), the feet from the ankles, each hand's 21 points from its body wrist and the 68
face points from the nose. A link's scale is the training/driving ratio of the bone's median length
over all frames where both of its ends are visible (hands: the forearm's ratio; face: the head ratio).
The pose is rebuilt outward from the neck: each point = its parent's new position + its driving offset
from that parent times the link's scale, so every bone keeps the driving direction and takes the
training length. A point whose parent is missing in a frame hangs from its nearest visible ancestor
(the mean scale of the skipped links); a point with no visible ancestor, e.g. everything in a frame
without a neck, is placed by the global map below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .pose import FACE, FEET, LEFT_HAND, NUM_POINTS, RIGHT_HAND, PoseSequence
from .skeleton import LIMBS

MODES = ("bones", "global", "off")
ANCHORS = ("auto", "ground", "neck")

NECK, NOSE = 1, 0
R_WRIST, L_WRIST, R_ANKLE, L_ANKLE = 4, 7, 10, 13
JOINT_NAMES = (
    "nose", "neck", "R shoulder", "R elbow", "R wrist", "L shoulder", "L elbow", "L wrist", "R hip", "R knee",
    "R ankle", "L hip", "L knee", "L ankle", "R eye", "L eye", "R ear", "L ear",
    "L big toe", "L small toe", "L heel", "R big toe", "R small toe", "R heel",
)
# Body bones (the drawn limbs, each already pointing away from the neck) and foot bones (from the ankles).
BONES = tuple(LIMBS) + tuple(
    (L_ANKLE if foot < FEET.start + 3 else R_ANKLE, foot) for foot in range(FEET.start, FEET.stop)
)
# The right/left partner of every joint (nose and neck are their own).
_MIRROR = dict(zip(range(24), (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16, 21, 22, 23, 18, 19, 20)))
TORSO_BONES = ((NECK, 2), (NECK, 5), (NECK, 8), (NECK, 11))
FOREARMS = {R_WRIST: (3, R_WRIST), L_WRIST: (6, L_WRIST)}
# Head size: nose-eye and eye-ear bones, and face-point pairs (outer eye corners, nose bridge, nose tip to
# chin, mouth corners, jaw ends), in our 134-point indices.
HEAD_PAIRS = ((NOSE, 14), (NOSE, 15), (14, 16), (15, 17)) + tuple(
    (FACE.start + a, FACE.start + b) for a, b in ((36, 45), (27, 30), (30, 8), (48, 54), (0, 16))
)
GROUND_POINTS = [R_ANKLE, L_ANKLE, *range(FEET.start, FEET.stop)]

# One Euro filter (Casiez, Roussel and Vogel, CHI 2012) with time in frames: smoothing s in (0, 1]
# sets the minimum cutoff geometrically between these (cycles per frame); speeds are in canvas heights
# per frame.
_CUTOFF_LIGHT, _CUTOFF_STRONG = 0.5, 0.01
_SPEED_COEFFICIENT = 15.0
_DERIVATIVE_CUTOFF = 0.15


def bone_name(bone: tuple[int, int]) -> str:
    return f"{JOINT_NAMES[bone[0]]}-{JOINT_NAMES[bone[1]]}"


@dataclass(frozen=True)
class RetargetResult:
    """poses: the retargeted sequence (on the training canvas, except for mode "off").
    bone_ratios: training/driving scale: "body" (the torso ratio, the global mode's scale and the scale of
    the path) and, in bones mode, every bone by name and "head" (the face points). fallbacks (bones mode):
    bone name -> where its ratio came from, for every ratio not measured in both sequences.
    empty_frames: driving frames without a person, kept empty."""

    poses: PoseSequence
    mode: str
    anchor: str
    smoothing: float
    bone_ratios: dict[str, float] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)
    empty_frames: list[int] = field(default_factory=list)
    names: tuple[str, str] = ("driving", "training")

    def report(self) -> str:
        driving, training = self.names
        lines = [f"pose retarget: mode {self.mode}, anchor {self.anchor}, smoothing {self.smoothing:g}; "
                 f"{len(self.poses)} frames"]
        if self.mode == "off":
            lines.append(f"{driving} passed through unchanged")
        else:
            lines.append(f"body scale (torso ratio {training}/{driving}) {self.bone_ratios['body']:.3f}")
        if self.mode == "bones":
            lines.append(f"head (face) ratio {self.bone_ratios['head']:.3f}; bone ratios: " + ", ".join(
                f"{name} {ratio:.3f}" for name, ratio in self.bone_ratios.items() if name not in ("body", "head")))
        by_source = {}
        for name, source in self.fallbacks.items():
            by_source.setdefault(source, []).append(name)
        lines += [f"fallback: {', '.join(bones)}: {source}" for source, bones in by_source.items()]
        if self.empty_frames:
            lines.append(f"{driving}: nobody in frame(s) {', '.join(map(str, self.empty_frames))}; kept empty")
        return "\n".join(lines)


def retarget_poses(driving: PoseSequence, training: PoseSequence, *, mode: str = "bones", anchor: str = "auto",
                   smoothing: float = 0.0, names: tuple[str, str] = ("driving", "training")) -> RetargetResult:
    """The driving poses with the training person's proportions, on the training canvas.

    mode: "bones" (every bone takes the training length, keeps the driving direction), "global" (one scale,
    the torso ratio, and a translation), "off" (the driving poses unchanged).
    anchor: which point of the first driving frame that shows it lands on the same point of the first
    training frame that shows it; later frames follow the driving neck's path scaled by the torso ratio.
    "ground": the neck's x and the ground line (the lowest visible ankle or foot point) for full-body clips;
    "neck": the neck, for half-body clips; "auto": ground when both sequences show the neck and an ankle
    or foot in at least half of their frames with a person, else neck.
    smoothing: 0 = off; in (0, 1] a One Euro filter on the driving points first (stronger for larger values;
    a still pose is left unchanged, a moving one lags slightly).
    names: how errors and the report call the two sequences (the nodes pass their input names).
    """
    driving_name, training_name = names
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if anchor not in ANCHORS:
        raise ValueError(f"anchor: {anchor!r} is not one of {', '.join(ANCHORS)}")
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing: {smoothing} is outside 0..1 (0 turns smoothing off)")
    for poses, name in ((driving, driving_name), (training, training_name)):
        if len(poses) == 0:
            raise ValueError(f"{name}: has no frames; connect the poses of a video (e.g. from the DWPose Extractor)")
        if len(poses.empty_frames) == len(poses):
            raise ValueError(f"{name}: nobody was detected in any frame; use a video in which the person is visible")
    empty = driving.empty_frames
    if mode == "off":
        return RetargetResult(driving, mode, anchor, smoothing, empty_frames=empty, names=names)

    if smoothing > 0:
        driving = smooth_keypoints(driving, smoothing)
    driving_visible, training_visible = _visible(driving), _visible(training)
    driving_lengths = _median_lengths(driving.points, driving_visible)
    training_lengths = _median_lengths(training.points, training_visible)
    body = _torso_ratio(driving_lengths, training_lengths, names)
    if mode == "global":
        placed = np.where(driving_visible[..., None], driving.points * body, 0.0)
        bone_ratios, fallbacks = {"body": body}, {}
    else:
        ratios, fallbacks = _bone_ratios(driving_lengths, training_lengths, body, names)
        head, head_fallback = _head_ratio(driving_lengths, training_lengths, body, names)
        if head_fallback:
            fallbacks["head (face)"] = head_fallback
        placed = _rebuild(driving.points, driving_visible, _link_scales(ratios, head), body)
        bone_ratios = {bone_name(bone): float(r) for bone, r in zip(BONES, ratios)}
        bone_ratios.update(head=float(head), body=float(body))

    anchor_used = anchor
    if anchor == "auto":
        full_body = _shows_ground(driving, driving_visible) and _shows_ground(training, training_visible)
        anchor_used = "ground" if full_body else "neck"
    offset = _anchor_offset(placed, driving_visible, training, training_visible, anchor_used, names)
    points = np.where(driving_visible[..., None], placed + offset, 0.0)
    scores = np.where(driving_visible, driving.scores, 0.0)
    retargeted = PoseSequence(points, scores, training.canvas_width, training.canvas_height,
                              driving.inserted_reference)
    label = f"{anchor_used} (auto)" if anchor == "auto" else anchor_used
    return RetargetResult(retargeted, mode, label, smoothing, bone_ratios, fallbacks, empty, names)


def smooth_keypoints(poses: PoseSequence, smoothing: float) -> PoseSequence:
    """One Euro filter along time for every point, time in frames; a point's filter restarts in each frame
    where it reappears after being missing. A still point is returned unchanged."""
    min_cutoff = _CUTOFF_LIGHT * (_CUTOFF_STRONG / _CUTOFF_LIGHT) ** smoothing
    visible = _visible(poses)
    smoothed = poses.points.copy()
    previous = np.zeros((NUM_POINTS, 2))
    speed = np.zeros((NUM_POINTS, 2))
    was_visible = np.zeros(NUM_POINTS, dtype=bool)
    derivative_alpha = _alpha(_DERIVATIVE_CUTOFF)
    for f in range(len(poses)):
        x, now = poses.points[f], visible[f]
        speed = derivative_alpha * (x - previous) + (1 - derivative_alpha) * speed
        cutoff = min_cutoff + _SPEED_COEFFICIENT * np.linalg.norm(speed, axis=-1, keepdims=True) / poses.canvas_height
        alpha = _alpha(cutoff)
        filtered = alpha * x + (1 - alpha) * previous
        restart = now & ~was_visible
        filtered[restart], speed[restart] = x[restart], 0.0
        smoothed[f] = np.where(now[:, None], filtered, x)
        previous = np.where(now[:, None], filtered, previous)
        speed = np.where(now[:, None], speed, 0.0)
        was_visible = now
    return replace(poses, points=smoothed)


def _alpha(cutoff):
    """Exponential smoothing factor for a cutoff frequency in cycles per frame (sampling period 1 frame)."""
    return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff))


def _visible(poses: PoseSequence) -> np.ndarray:
    return poses.visible & np.isfinite(poses.points).all(axis=-1)


def _median_lengths(points: np.ndarray, visible: np.ndarray) -> dict[tuple[int, int], float]:
    """Median length of every bone and head pair over the frames where both ends are visible (nan if never)."""
    lengths = {}
    for a, b in BONES + HEAD_PAIRS:
        both = visible[:, a] & visible[:, b]
        measured = np.linalg.norm(points[both, a] - points[both, b], axis=-1)
        median = float(np.median(measured)) if measured.size else math.nan
        lengths[(a, b)] = median if median > 0 else math.nan
    return lengths


def _mirror(bone: tuple[int, int]) -> tuple[int, int]:
    return _MIRROR[bone[0]], _MIRROR[bone[1]]


def _torso_ratio(driving: dict, training: dict, names: tuple[str, str]) -> float:
    """Training/driving ratio of the summed torso bones (neck to shoulders and hips) measured in both, a bone
    seen in one sequence only standing in for its partner."""
    for lengths, name in ((training, names[1]), (driving, names[0])):
        if all(math.isnan(lengths[bone]) for bone in TORSO_BONES):
            raise ValueError(
                f"{name}: no frame shows the torso (the neck with a shoulder or a hip), so the body's size cannot "
                "be measured; use a video in which the person's upper body is visible, or set mode to off"
            )

    def length(lengths, bone):
        return lengths[bone] if not math.isnan(lengths[bone]) else lengths[_mirror(bone)]

    pairs = [(length(training, bone), length(driving, bone)) for bone in TORSO_BONES]
    pairs = [(t, d) for t, d in pairs if not (math.isnan(t) or math.isnan(d))]
    if not pairs:
        raise ValueError(
            f"{names[0]} and {names[1]}: one shows only the shoulders and the other only the hips, so the two "
            "bodies cannot be compared; use videos that both show the shoulders, or set mode to off"
        )
    return sum(t for t, _ in pairs) / sum(d for _, d in pairs)


def _bone_ratios(driving: dict, training: dict, body: float, names: tuple[str, str]) -> tuple[np.ndarray, dict]:
    """Per bone: training/driving median length; a bone not measured in both takes its left/right partner's
    ratio, then the torso ratio. Returns the ratios in BONES order and the fallbacks used."""
    driving_name, training_name = names

    def measured(bone):
        return not (math.isnan(driving[bone]) or math.isnan(training[bone]))

    ratios, fallbacks = [], {}
    for bone in BONES:
        if measured(bone):
            ratios.append(training[bone] / driving[bone])
            continue
        missing = " and ".join(name for name, lengths in ((training_name, training), (driving_name, driving))
                               if math.isnan(lengths[bone]))
        partner = _mirror(bone)
        if partner != bone and measured(partner):
            ratios.append(training[partner] / driving[partner])
            fallbacks[bone_name(bone)] = f"never seen in {missing}; ratio of {bone_name(partner)} ({ratios[-1]:.3f})"
        else:
            ratios.append(body)
            fallbacks[bone_name(bone)] = f"never seen in {missing}, nor its partner; torso ratio ({body:.3f})"
    return np.array(ratios), fallbacks


def _head_ratio(driving: dict, training: dict, body: float, names: tuple[str, str]) -> tuple[float, str]:
    """Training/driving ratio of the summed head pairs measured in both; else the torso ratio."""
    pairs = [(training[p], driving[p]) for p in HEAD_PAIRS if not (math.isnan(training[p]) or math.isnan(driving[p]))]
    if pairs:
        return sum(t for t, _ in pairs) / sum(d for _, d in pairs), ""
    return body, f"no eyes, ears or face points seen in both {names[0]} and {names[1]}; torso ratio ({body:.3f})"


def _tree() -> np.ndarray:
    """parent[p] for all 134 points (-1 for the neck, the root)."""
    parent = np.full(NUM_POINTS, -1)
    for a, b in BONES:
        parent[b] = a
    parent[FACE] = NOSE
    parent[LEFT_HAND] = L_WRIST
    parent[RIGHT_HAND] = R_WRIST
    return parent


PARENT = _tree()


def _children_first_order() -> list[int]:
    """All points, every parent before its children (breadth first from the neck)."""
    order, frontier = [], [NECK]
    while frontier:
        order += frontier
        frontier = [p for p in range(NUM_POINTS) if PARENT[p] in frontier]
    return order


ORDER = _children_first_order()


def _link_scales(ratios: np.ndarray, head: float) -> np.ndarray:
    """scale[p]: the factor for point p's offset from its parent."""
    scale = np.ones(NUM_POINTS)
    bone_ratio = dict(zip(BONES, ratios))
    for bone, r in bone_ratio.items():
        scale[bone[1]] = r
    scale[FACE] = head
    scale[LEFT_HAND] = bone_ratio[FOREARMS[L_WRIST]]
    scale[RIGHT_HAND] = bone_ratio[FOREARMS[R_WRIST]]
    return scale


def _rebuild(points: np.ndarray, visible: np.ndarray, scale: np.ndarray, body: float) -> np.ndarray:
    """Rebuild every frame outward from the neck; a point without a visible ancestor is placed at
    body * its driving position (the global map without its offset)."""
    placed = np.zeros_like(points)
    for p in ORDER:
        open_frames = visible[:, p].copy()
        ancestor, link_sum, links = PARENT[p], scale[p], 1
        while ancestor >= 0 and open_frames.any():
            here = open_frames & visible[:, ancestor]
            placed[here, p] = placed[here, ancestor] + link_sum / links * (points[here, p] - points[here, ancestor])
            open_frames &= ~here
            link_sum, links = link_sum + scale[ancestor], links + 1
            ancestor = PARENT[ancestor]
        placed[open_frames, p] = body * points[open_frames, p]
    return placed


def _anchor_points(points: np.ndarray, visible: np.ndarray, anchor: str) -> np.ndarray:
    """[F, 2] anchor point per frame, nan where it is not visible: the neck, or (neck x, lowest ground point y)."""
    anchors = np.where(visible[:, [NECK]], points[:, NECK], np.nan)
    if anchor == "ground":
        ground_y = np.where(visible[:, GROUND_POINTS], points[:, GROUND_POINTS, 1], -np.inf).max(axis=1)
        anchors[:, 1] = np.where(np.isfinite(ground_y), ground_y, np.nan)
        anchors[np.isnan(anchors).any(axis=1)] = np.nan
    return anchors


def _shows_ground(poses: PoseSequence, visible: np.ndarray) -> bool:
    shown = ~np.isnan(_anchor_points(poses.points, visible, "ground")).any(axis=1)
    return shown.sum() * 2 >= len(poses) - len(poses.empty_frames)


def _anchor_offset(placed: np.ndarray, visible: np.ndarray, training: PoseSequence, training_visible: np.ndarray,
                   anchor: str, names: tuple[str, str]) -> np.ndarray:
    """The translation that puts the first placed frame's anchor onto the first training frame's anchor."""
    first = []
    for points, seen, name in ((placed, visible, names[0]), (training.points, training_visible, names[1])):
        anchors = _anchor_points(points, seen, anchor)
        shown = np.flatnonzero(~np.isnan(anchors).any(axis=1))
        if not shown.size:
            what = "the neck with an ankle or foot point" if anchor == "ground" else "the neck"
            raise ValueError(f"{name}: no frame shows {what}, which anchor '{anchor}' needs; "
                             + ("use anchor neck or auto" if anchor == "ground" else "use a video where the shoulders are visible"))
        first.append(anchors[shown[0]])
    return first[1] - first[0]
