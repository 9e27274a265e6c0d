"""Whole-body pose sequences and their POSE_KEYPOINT form (spec 7.1, 7.5).

One person per frame. Points follow the OpenPose-ordered 134-point whole-body layout that
DWPose produces after neck synthesis (spec 7.1): body 0-17, feet 18-23, face 24-91,
left hand 92-112, right hand 113-133. Coordinates are pixels of the pose canvas (the frame the
pose was detected on). A point is visible when its score is at least ``VISIBLE_SCORE``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

NUM_POINTS = 134
BODY = slice(0, 18)
FEET = slice(18, 24)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)
VISIBLE_SCORE = 0.3
R_EYE, L_EYE = 14, 15
R_WRIST, L_WRIST = 4, 7

# Key that marks the frame the pose inserter put in (spec 5.3); other packs ignore unknown keys.
INSERTED_REFERENCE_KEY = "posecrafter_inserted_reference"

# A POSE_KEYPOINT part whose visible coordinates all lie here is normalised (0..1 of the canvas), else pixels;
# the margin keeps points detected just outside the frame (a fingertip at x = 1.02) normalised.
NORMALISED_RANGE = (-0.5, 1.5)
MAX_CANVAS = 65536

_KEYPOINT_PARTS = (  # POSE_KEYPOINT key, slice of our layout, point count in the JSON
    ("pose_keypoints_2d", BODY, 18),
    ("foot_keypoints_2d", FEET, 6),  # written by core ComfyUI's SDPose extractor, same order as ours
    ("face_keypoints_2d", FACE, 70),
    ("hand_left_keypoints_2d", LEFT_HAND, 21),
    ("hand_right_keypoints_2d", RIGHT_HAND, 21),
)


@dataclass(frozen=True)
class PoseSequence:
    """F single-person whole-body poses on one canvas.

    points: [F, 134, 2] float pixel coordinates on the canvas.
    scores: [F, 134] confidences; a frame where nobody was found has all scores 0.
    inserted_reference: index of the reference pose put in by the pose inserter (spec 5.3), or None.
    """

    points: np.ndarray
    scores: np.ndarray
    canvas_width: int
    canvas_height: int
    inserted_reference: int | None = None

    def __post_init__(self):
        points = np.asarray(self.points, dtype=np.float64)
        scores = np.asarray(self.scores, dtype=np.float64)
        if points.ndim != 3 or points.shape[1:] != (NUM_POINTS, 2):
            raise ValueError(f"points: expected shape [F, {NUM_POINTS}, 2], got {list(points.shape)}")
        if scores.shape != points.shape[:2]:
            raise ValueError(f"scores: expected shape {list(points.shape[:2])}, got {list(scores.shape)}")
        if not (np.isfinite(self.canvas_width) and np.isfinite(self.canvas_height)) or \
                int(self.canvas_width) < 1 or int(self.canvas_height) < 1:
            raise ValueError(
                f"canvas_width/canvas_height: must be positive pixel counts, got {self.canvas_width}x{self.canvas_height}"
            )
        if self.inserted_reference is not None and not 0 <= self.inserted_reference < len(points):
            raise ValueError(
                f"inserted_reference: {self.inserted_reference} is not a frame index of a {len(points)}-frame sequence"
            )
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "canvas_width", int(self.canvas_width))
        object.__setattr__(self, "canvas_height", int(self.canvas_height))

    def __len__(self) -> int:
        return len(self.points)

    @property
    def visible(self) -> np.ndarray:
        """[F, 134] bool: score >= VISIBLE_SCORE."""
        return self.scores >= VISIBLE_SCORE

    @property
    def empty_frames(self) -> list[int]:
        """Indices of frames without any visible point (nobody detected)."""
        return [int(i) for i in np.flatnonzero(~self.visible.any(axis=1))]

    def frame(self, index: int) -> PoseSequence:
        """The single pose at ``index`` as a 1-frame sequence."""
        if not -len(self) <= index < len(self):
            raise ValueError(f"index: {index} is outside this {len(self)}-frame pose sequence")
        return PoseSequence(self.points[[index]], self.scores[[index]], self.canvas_width, self.canvas_height)

    def on_canvas(self, canvas_width: int, canvas_height: int) -> PoseSequence:
        """The same poses with coordinates rescaled to another canvas size."""
        scale = np.array([canvas_width / self.canvas_width, canvas_height / self.canvas_height])
        return replace(self, points=self.points * scale, canvas_width=canvas_width, canvas_height=canvas_height)

    def cropped(self, left: int, top: int, width: int, height: int) -> PoseSequence:
        """The same poses on the ``width`` x ``height`` window of the canvas whose top-left pixel is
        (``left``, ``top``); points outside the window keep their (now outside) coordinates."""
        if left < 0 or top < 0 or width < 1 or height < 1 or left + width > self.canvas_width or \
                top + height > self.canvas_height:
            raise ValueError(f"crop: the window {width}x{height} at ({left}, {top}) is not inside the "
                             f"{self.canvas_width}x{self.canvas_height} canvas")
        return replace(self, points=self.points - [left, top], canvas_width=width, canvas_height=height)


def interpolate_empty_frames(poses: PoseSequence) -> PoseSequence:
    """Fill frames where nobody was detected from the nearest detected frames before and after.

    Between two detected frames the coordinates are interpolated linearly; a point stays visible
    only if it is visible in both (score = the smaller one). Gaps at either end copy the nearest
    detected frame.
    """
    empty = set(poses.empty_frames)
    detected = [i for i in range(len(poses)) if i not in empty]
    if not detected:
        raise ValueError(
            "poses: nobody was detected in any frame, so there is nothing to interpolate from; "
            "use frames in which the person is visible"
        )
    points, scores = poses.points.copy(), poses.scores.copy()
    for i in sorted(empty):
        before = max((d for d in detected if d < i), default=None)
        after = min((d for d in detected if d > i), default=None)
        if before is None or after is None:
            nearest = after if before is None else before
            points[i], scores[i] = poses.points[nearest], poses.scores[nearest]
            continue
        t = (i - before) / (after - before)
        points[i] = (1 - t) * poses.points[before] + t * poses.points[after]
        both = poses.visible[before] & poses.visible[after]
        scores[i] = np.where(both, np.minimum(poses.scores[before], poses.scores[after]), 0.0)
    return replace(poses, points=points, scores=scores)


def to_pose_keypoint(poses: PoseSequence) -> list[dict]:
    """Write POSE_KEYPOINT exactly as comfyui_controlnet_aux does (spec 7.5).

    Visible points become (x, y, 1.0), others (0, 0, 0); a face or hand without any visible point
    is None; the face gets the body's R eye and L eye appended (70 points); a frame without any
    visible point has ``people: []``. Feet are written as ``foot_keypoints_2d`` (the key of core
    ComfyUI's SDPose extractor, which other packs ignore) only when a foot point is visible.
    """
    frames = []
    for f in range(len(poses)):
        visible = poses.visible[f]
        triples = np.zeros((NUM_POINTS, 3))
        triples[visible, :2] = poses.points[f, visible]
        triples[visible, 2] = 1.0
        people = []
        if visible.any():
            person = {}
            for key, part, _ in _KEYPOINT_PARTS:
                part_triples = triples[part]
                if part == FACE:
                    part_triples = np.concatenate([part_triples, triples[[R_EYE, L_EYE]]])
                has_points = part == BODY or visible[part].any()
                if part == FEET and not has_points:
                    continue
                person[key] = [float(v) for v in part_triples.reshape(-1)] if has_points else None
            people.append(person)
        frame = {"people": people, "canvas_height": poses.canvas_height, "canvas_width": poses.canvas_width}
        if f == poses.inserted_reference:
            frame[INSERTED_REFERENCE_KEY] = True
        frames.append(frame)
    return frames


def from_pose_keypoint(pose_keypoint: list[dict], input_name: str = "pose_keypoint") -> PoseSequence:
    """Read POSE_KEYPOINT (spec 7.5) into a PoseSequence; error messages name it ``input_name``.

    Accepts the formats of comfyui_controlnet_aux (pixel or normalised 0..1 coordinates, confidences
    1/0, None parts, 70-point faces) and of core ComfyUI's SDPose extractor (pixel coordinates, real
    confidences for every point, ``foot_keypoints_2d``). Pixels or normalised is decided per part (body,
    feet, face, each hand), as comfyui_controlnet_aux's drawing does: a part is normalised when all its
    visible coordinates lie within ``NORMALISED_RANGE`` (a margin for points just outside the frame).
    The two eye points appended to 70-point faces duplicate the body's eyes and are ignored. With several
    people the one with the highest summed confidence is kept (spec 9 #19). Frames on a different canvas
    size than the first are rescaled onto the first frame's canvas.

    A point marked missing (confidence below ``VISIBLE_SCORE``) may have any coordinates, NaN included;
    they are stored as 0. A visible point must have finite coordinates within one canvas size of the
    canvas (anything further cannot be drawn), and every confidence must be a finite number.
    """
    if isinstance(pose_keypoint, dict):
        raise ValueError(
            f"{input_name}: expected a list of frame dicts (POSE_KEYPOINT), got a single dict; wrap it in a list"
        )
    if not isinstance(pose_keypoint, (list, tuple)):
        raise ValueError(
            f"{input_name}: expected POSE_KEYPOINT, a list of frame dicts, got {_kind(pose_keypoint)}; connect the "
            "pose output of a pose node (PoseCrafter DWPose Extractor, DWPose Estimator, SDPose Keypoint Extractor)"
        )
    if len(pose_keypoint) == 0:
        raise ValueError(f"{input_name}: has no frames; connect poses of at least one frame")

    canvases = [_canvas_size(frame, f"{input_name}[{f}]") for f, frame in enumerate(pose_keypoint)]
    canvas_width, canvas_height = canvases[0]
    points = np.zeros((len(pose_keypoint), NUM_POINTS, 2))
    scores = np.zeros((len(pose_keypoint), NUM_POINTS))
    inserted = []
    for f, frame in enumerate(pose_keypoint):
        if frame.get(INSERTED_REFERENCE_KEY):
            inserted.append(f)
        people = frame.get("people")
        if people is None:
            continue
        if not isinstance(people, (list, tuple)):
            raise ValueError(
                f"{input_name}[{f}].people: expected a list of person dicts, got {_kind(people)}; "
                "an empty list means nobody is in the frame"
            )
        if not people:
            continue
        width, height = canvases[f]
        candidates = [_read_person(person, width, height, f"{input_name}[{f}].people[{p}]")
                      for p, person in enumerate(people)]
        frame_points, frame_scores = max(candidates, key=lambda c: c[1][c[1] >= VISIBLE_SCORE].sum())
        frame_points, frame_scores = _hands_on_their_wrists(frame_points, frame_scores)
        points[f] = frame_points * [canvas_width / width, canvas_height / height]
        scores[f] = frame_scores
    if len(inserted) > 1:
        raise ValueError(
            f"{input_name}: frames {inserted} are all marked '{INSERTED_REFERENCE_KEY}'; "
            "insert the reference pose only once"
        )
    return PoseSequence(points, scores, canvas_width, canvas_height, inserted[0] if inserted else None)


def _hands_on_their_wrists(points: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap the two hands when they sit at each other's wrist.

    A hand's point 0 is its wrist. Extractors disagree on which label the person's left hand gets (core
    ComfyUI's SDPose writes COCO-WholeBody's left hand as ``hand_right_keypoints_2d``, comfyui_controlnet_aux
    and DWPose as ``hand_left_keypoints_2d``), so the body's wrists decide: with both wrists visible, the hands
    are swapped when their visible wrist points lie less than half as far from the other wrist.
    """
    if not (scores[[L_WRIST, R_WRIST]] >= VISIBLE_SCORE).all():
        return points, scores
    labelled = swapped = 0.0
    for hand_wrist, own, other in ((LEFT_HAND.start, L_WRIST, R_WRIST), (RIGHT_HAND.start, R_WRIST, L_WRIST)):
        if scores[hand_wrist] >= VISIBLE_SCORE:
            labelled += np.linalg.norm(points[hand_wrist] - points[own])
            swapped += np.linalg.norm(points[hand_wrist] - points[other])
    if not 2 * swapped < labelled:
        return points, scores
    order = np.r_[0:LEFT_HAND.start, RIGHT_HAND, LEFT_HAND]
    return points[order], scores[order]


def _kind(value) -> str:
    """What a wrong value is, for error messages."""
    if isinstance(value, str):
        return f"the text {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return f"{type(value).__name__} {value!r}"[:80] if isinstance(value, (int, float)) else type(value).__name__


def _canvas_size(frame: dict, where: str) -> tuple[int, int]:
    if not isinstance(frame, dict):
        raise ValueError(f"{where}: expected a frame dict with 'people', 'canvas_width' and 'canvas_height', "
                         f"got {_kind(frame)}")
    size = []
    for key in ("canvas_width", "canvas_height"):
        value = frame.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
                np.isfinite(value) and value == int(value) and 1 <= value <= MAX_CANVAS):
            raise ValueError(
                f"{where}: needs integer 'canvas_width' and 'canvas_height' from 1 to {MAX_CANVAS} (the size of "
                f"the frame the pose was detected on), got {key} = {value!r}"
            )
        size.append(int(value))
    return size[0], size[1]


def _read_person(person: dict, width: int, height: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One person's points in pixels of its frame's canvas, and their scores."""
    if not isinstance(person, dict):
        raise ValueError(f"{where}: expected a person dict (pose_keypoints_2d, ...), got {_kind(person)}")
    points = np.zeros((NUM_POINTS, 2))
    scores = np.zeros(NUM_POINTS)
    for key, part, count in _KEYPOINT_PARTS:
        values = person.get(key)
        if values is None or (isinstance(values, (list, tuple)) and len(values) == 0):
            continue
        triples = _numbers(values, f"{where}.{key}", count)
        allowed = (count * 3, 68 * 3) if part == FACE else (count * 3,)
        if triples.size not in allowed:
            raise ValueError(
                f"{where}.{key}: expected {count * 3} numbers (flat x, y, confidence triples of {count} points), "
                f"got {triples.size}"
            )
        triples = triples.reshape(-1, 3)[: part.stop - part.start]
        part_points, part_scores = _checked_points(triples, f"{where}.{key}")
        visible = part_scores >= VISIBLE_SCORE
        if visible.any() and np.all((part_points[visible] >= NORMALISED_RANGE[0])
                                    & (part_points[visible] <= NORMALISED_RANGE[1])):
            part_points = part_points * [width, height]
        far = visible & np.any((part_points < [-width, -height]) | (part_points > [2 * width, 2 * height]), axis=1)
        if far.any():
            i = int(np.flatnonzero(far)[0])
            raise ValueError(
                f"{where}.{key}: point {i} at ({triples[i, 0]:.6g}, {triples[i, 1]:.6g}) lies more than one canvas "
                f"size outside the {width}x{height} canvas; fix the pose (or its canvas_width/canvas_height), or mark "
                "the point missing with confidence 0"
            )
        points[part], scores[part] = part_points, part_scores
    return points, scores


def _numbers(values, where: str, count: int) -> np.ndarray:
    """The flat float array of a keypoint list, or a ValueError saying what is wrong with it."""
    expected = f"a flat list of {count * 3} numbers (x, y, confidence for each of {count} points)"
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, (list, tuple, np.ndarray)):
        raise ValueError(f"{where}: expected {expected}, got {_kind(values)}")
    try:
        array = np.asarray(values)
    except ValueError:  # numpy refuses nested lists of different lengths
        array = None
    if array is None or array.dtype.kind not in "iuf":
        raise ValueError(f"{where}: expected {expected}, but it holds text, other non-numbers or lists of different "
                         "lengths; write every point as three numbers")
    return array.astype(np.float64).reshape(-1)


def _checked_points(triples: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Points and scores of [n, 3] triples; missing points get coordinates 0, broken visible ones an error."""
    part_points, part_scores = triples[:, :2].copy(), triples[:, 2].copy()
    if not np.isfinite(part_scores).all():
        i = int(np.flatnonzero(~np.isfinite(part_scores))[0])
        raise ValueError(
            f"{where}: point {i} has confidence {part_scores[i]}; every confidence must be a number (0 marks a "
            "missing point)"
        )
    visible = part_scores >= VISIBLE_SCORE
    broken = visible & ~np.isfinite(part_points).all(axis=1)
    if broken.any():
        i = int(np.flatnonzero(broken)[0])
        raise ValueError(
            f"{where}: point {i} is marked visible (confidence {part_scores[i]:.3g}) but its coordinates are "
            f"({triples[i, 0]}, {triples[i, 1]}); fix the pose source, or mark the point missing with confidence 0"
        )
    part_points[~visible] = 0.0
    return part_points, part_scores
