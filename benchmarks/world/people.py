"""The small world's people: identities, backgrounds, motions and the renderer (plain numpy/OpenCV, seeded).

A person is an *identity* (colours, shirt stripes, hair style, limb thickness) drawn on a whole-body pose in the
pack's layout (:mod:`posecrafter.pose`: 18 body, 6 foot, 68 face and 2 x 21 hand points). The pose's geometry,
body proportions included, comes from :func:`motion`: its seed picks the body (the "actor") and the motion's
parameters, so two seeds give two people of other proportions. Everything is deterministic in its seeds.

The renderer also returns a part-label map (which body part painted each pixel), the ground truth that
``scoring.py`` measures generated frames against.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from posecrafter.pose import BODY, FACE, FEET, LEFT_HAND, NUM_POINTS, RIGHT_HAND, PoseSequence

MOTIONS = ("dance", "wave", "walk", "turn_head", "hands")

# Named shirt colours (RGB): the prompts name them, so a prompt edit changes the shirt (and nothing else).
SHIRT_COLOURS = {
    "red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (225, 200, 40),
    "purple": (130, 50, 170), "orange": (235, 130, 30), "white": (235, 235, 235), "pink": (235, 130, 180),
}
_SKIN = ((255, 220, 190), (235, 190, 150), (200, 150, 110), (160, 110, 75), (110, 75, 50))
_HAIR = ((30, 25, 20), (90, 60, 35), (200, 170, 90), (160, 70, 30), (150, 150, 150))
_TROUSERS = ((40, 50, 90), (30, 30, 35), (110, 110, 115), (120, 85, 50), (190, 170, 120), (60, 90, 60))
FEATURE_COLOUR = (25, 20, 20)  # eyes and brows
MOUTH_COLOUR = (150, 40, 50)
GROUND = 0.92  # where a standing person's ankles are, as a share of the frame height (one floor for everyone)

# Part labels of the label map, and the groups scoring reports.
LABELS = ("background", "torso", "sleeves", "forearms", "trousers", "shoes", "neck", "face", "hair", "hands",
          "features")
PART_GROUPS = {"torso": ("torso",), "arms": ("sleeves", "forearms"), "legs": ("trousers", "shoes"),
               "head": ("neck", "face", "hair"), "hands": ("hands",), "face": ("features",)}


@dataclass(frozen=True)
class Identity:
    """How a person looks. Colours are RGB 0..255; ``shirt`` is one of :data:`SHIRT_COLOURS`' names."""

    seed: int
    shirt: str
    shirt_rgb: tuple[int, int, int]
    stripe_rgb: tuple[int, int, int]
    stripe_period: int  # pixels at 128 px, scaled with the frame
    skin_rgb: tuple[int, int, int]
    hair_rgb: tuple[int, int, int]
    long_hair: bool
    trousers_rgb: tuple[int, int, int]
    shoes_rgb: tuple[int, int, int]
    build: float  # limb thickness factor

    def part_colours(self) -> dict[str, tuple[tuple[int, int, int], ...]]:
        """The colours each labelled part is painted in (the torso carries the shirt and its stripes)."""
        skin = (self.skin_rgb,)
        return {"torso": (self.shirt_rgb, self.stripe_rgb), "sleeves": (self.shirt_rgb,), "forearms": skin,
                "trousers": (self.trousers_rgb,), "shoes": (self.shoes_rgb,), "neck": skin, "face": skin,
                "hair": (self.hair_rgb,), "hands": skin, "features": (FEATURE_COLOUR, MOUTH_COLOUR)}

    def with_shirt(self, name: str) -> "Identity":
        """The same person in another named shirt colour (the attribute a prompt edit changes)."""
        check_shirt(name)
        shirt = SHIRT_COLOURS[name]
        return Identity(**{**self.__dict__, "shirt": name, "shirt_rgb": shirt, "stripe_rgb": _stripe(shirt)})


def check_shirt(name: str) -> None:
    if name not in SHIRT_COLOURS:
        raise ValueError(f"shirt colour {name!r} is not one of the world's: {', '.join(SHIRT_COLOURS)}")


def _jitter(rng, colour, amount=18) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255))


def _stripe(shirt) -> tuple[int, int, int]:
    """The stripe colour: the shirt's, darker for light shirts and lighter for dark ones."""
    shirt = np.asarray(shirt, dtype=float)
    target = 0.0 if shirt.mean() > 150 else 255.0
    return tuple(int(v) for v in np.round(shirt + (target - shirt) * 0.45))


def identity(seed: int) -> Identity:
    """A random person: skin, hair (colour, long or short), a named shirt colour with stripes, trousers, shoes."""
    rng = np.random.default_rng([seed, 1])
    shirt = str(rng.choice(list(SHIRT_COLOURS)))
    return Identity(
        seed=seed, shirt=shirt, shirt_rgb=SHIRT_COLOURS[shirt], stripe_rgb=_stripe(SHIRT_COLOURS[shirt]),
        stripe_period=int(rng.integers(5, 9)), skin_rgb=_jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10),
        hair_rgb=_jitter(rng, _HAIR[rng.integers(len(_HAIR))]), long_hair=bool(rng.random() < 0.5),
        trousers_rgb=_jitter(rng, _TROUSERS[rng.integers(len(_TROUSERS))]),
        shoes_rgb=_jitter(rng, (45, 35, 30), 25), build=float(rng.uniform(0.85, 1.2)),
    )


def background(seed: int, size: int = 128) -> np.ndarray:
    """A static room, uint8 [size, size, 3]: a wall with a vertical gradient and framed pictures, a floor with
    tiles, low-contrast texture. Deterministic in ``seed``."""
    check_size(size)
    rng = np.random.default_rng([seed, 2])
    wall = rng.uniform(60, 220, 3)
    floor = rng.uniform(40, 180, 3)
    horizon = int(size * rng.uniform(0.62, 0.75))
    y = np.linspace(0, 1, size)[:, None, None]
    image = np.empty((size, size, 3))
    image[:] = wall * (0.85 + 0.3 * y)
    tile = max(4, int(size * rng.uniform(0.08, 0.14)))
    yy, xx = np.mgrid[0:size, 0:size]
    checker = ((xx // tile + (yy - horizon) // max(2, tile // 2)) % 2)[..., None]
    image[horizon:] = (floor * (0.9 + 0.2 * checker))[horizon:]
    for _ in range(int(rng.integers(2, 5))):  # pictures and windows on the wall
        w, h = (rng.uniform(0.1, 0.25, 2) * size).astype(int)
        x0, y0 = int(rng.uniform(0, size - w)), int(rng.uniform(0.05 * size, max(0.06 * size, horizon - h - 4)))
        cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), tuple(float(v) for v in rng.uniform(20, 235, 3)), -1)
        cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), tuple(float(v) for v in rng.uniform(20, 120, 3)),
                      max(1, size // 64))
    smooth = cv2.GaussianBlur(rng.normal(0, 1, (size, size)), (0, 0), size / 48)
    image += (smooth / (smooth.std() + 1e-9) * 6)[..., None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 64 or size % 8:
        raise ValueError(f"size: must be a whole number of pixels, a multiple of 8 and at least 64, got {size!r}")


def check_frames(frames: int) -> None:
    if not isinstance(frames, (int, np.integer)) or frames < 2:
        raise ValueError(f"frames: a video needs at least 2 frames, got {frames!r}")


def check_motion(kind: str) -> None:
    if kind not in MOTIONS:
        raise ValueError(f"motion kind {kind!r} is unknown: use one of {', '.join(MOTIONS)}")


# ---------------------------------------------------------------------------------------------- poses
@dataclass(frozen=True)
class Body:
    """Proportions in units of the torso (neck to mid-hip); ``torso`` is that length as a share of the frame."""

    torso: float
    shoulder: float
    hip: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    head: float  # head radius
    hand: float  # hand length


def body(seed: int) -> Body:
    rng = np.random.default_rng([seed, 3])
    u = lambda low, high: float(rng.uniform(low, high))  # noqa: E731
    return Body(torso=u(0.2, 0.24), shoulder=u(0.38, 0.5), hip=u(0.17, 0.24), upper_arm=u(0.5, 0.62),
                forearm=u(0.45, 0.55), thigh=u(0.62, 0.78), shin=u(0.55, 0.7), head=u(0.36, 0.44), hand=u(0.3, 0.38))


def _direction(angle):
    """Unit vectors at ``angle`` from straight down (image y grows downwards), positive towards +x."""
    angle = np.asarray(angle, dtype=float)
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _rotate(vectors: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return vectors @ np.array([[c, s], [-s, c]])


def _face_template() -> tuple[np.ndarray, np.ndarray]:
    """68 face points (jaw 17, brows 10, nose 9, eyes 12, lips 20) about the head centre in head radii, and a
    depth per point (for turning the head)."""
    jaw_angle = np.linspace(-0.5 * np.pi, 0.5 * np.pi, 17)
    jaw = np.stack([0.82 * np.sin(jaw_angle), -0.05 + 0.95 * np.cos(jaw_angle)], axis=1)
    brows = np.stack([np.r_[np.linspace(-0.55, -0.15, 5), np.linspace(0.15, 0.55, 5)],
                      np.tile(-0.34 - 0.05 * np.sin(np.linspace(0, np.pi, 5)), 2)],
                     axis=1)
    nose = np.stack([np.r_[np.zeros(4), np.linspace(-0.12, 0.12, 5)],
                     np.r_[np.linspace(-0.22, 0.18, 4), 0.24 + 0.03 * np.cos(np.linspace(-1, 1, 5))]], axis=1)
    ring = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye = np.stack([np.cos(ring) * 0.14, np.sin(ring) * 0.06], axis=1)
    eyes = np.r_[eye + [-0.33, -0.12], eye + [0.33, -0.12]]
    outer = np.linspace(np.pi, -np.pi, 13)[:-1]
    inner = np.linspace(np.pi, -np.pi, 9)[:-1]
    lips = np.r_[np.stack([np.cos(outer) * 0.28, 0.5 + np.sin(outer) * 0.09], axis=1),
                 np.stack([np.cos(inner) * 0.18, 0.5 + np.sin(inner) * 0.04], axis=1)]
    points = np.r_[jaw, brows, nose, eyes, lips]
    depth = np.r_[-0.5 * np.abs(np.sin(jaw_angle)), np.full(10, 0.35),
                  np.r_[np.linspace(0.4, 0.6, 4), np.full(5, 0.45)],
                  np.full(12, 0.3), np.full(20, 0.4)]
    return points, depth


_FACE_POINTS, _FACE_DEPTH = _face_template()
_FINGER_ANGLES = np.radians([-45, -15, 0, 15, 32])  # thumb .. little finger
_FINGER_LENGTHS = np.array([0.75, 1.0, 1.05, 1.0, 0.8])


def _hand(wrist: np.ndarray, angle: float, openness: float, length: float, side: int) -> np.ndarray:
    """21 hand points: the wrist, then 4 joints per finger fanned about ``angle``; a closed hand curls its
    fingers back towards the palm."""
    points = [wrist]
    palm = 0.45 * length
    for finger_angle, finger_length in zip(_FINGER_ANGLES, _FINGER_LENGTHS):
        base = wrist + _direction(angle + side * finger_angle * 0.8) * palm
        reach = (0.55 * length * finger_length) * (0.3 + 0.7 * openness)
        direction = angle + side * finger_angle * (0.4 + 0.8 * openness)
        for joint in range(4):
            curl = (1 - openness) * 0.9 * joint
            points.append(base + _direction(direction + side * curl) * reach * joint / 3)
    return np.array(points)


def _smooth_noise(rng, frames: int, fps: float, amplitude: float, low=0.25, high=1.2) -> np.ndarray:
    """A sum of two sines of seeded frequencies (``low``..``high`` Hz), at most ``amplitude``."""
    t = np.arange(frames) / fps
    freq, phase, mix = rng.uniform(low, high, 2), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.3, 0.7)
    return amplitude * (mix * np.sin(2 * np.pi * freq[0] * t + phase[0])
                        + (1 - mix) * np.sin(2 * np.pi * freq[1] * t + phase[1]))


def _motion_parameters(kind: str, frames: int, rng, fps: float) -> dict[str, np.ndarray]:
    """Per-frame joint angles of one motion kind (radians; arm angles are away from the body), the hip centre's
    x and its rise ``y`` above standing height (shares of the frame)."""
    n = lambda amplitude, low=0.25, high=1.2: _smooth_noise(rng, frames, fps, amplitude, low, high)  # noqa: E731
    t = np.arange(frames) / fps
    zero = np.zeros(frames)
    p = dict(x=0.5 + rng.uniform(-0.08, 0.08) + n(0.03), y=np.zeros(frames),
             lean=n(0.05), yaw=n(0.15), roll=n(0.08),
             shoulder_r=0.35 + n(0.15), shoulder_l=0.35 + n(0.15), elbow_r=0.3 + n(0.2), elbow_l=0.3 + n(0.2),
             wrist_r=n(0.2), wrist_l=n(0.2), open_r=0.7 + n(0.2), open_l=0.7 + n(0.2),
             thigh_r=0.08 + zero, thigh_l=0.08 + zero, lift_r=zero.copy(), lift_l=zero.copy())
    if kind == "dance":
        p.update(x=p["x"] + n(0.08), lean=n(0.2), roll=n(0.2),
                 shoulder_r=0.8 + n(1.1), shoulder_l=0.8 + n(1.1), elbow_r=0.5 + n(0.7), elbow_l=0.5 + n(0.7),
                 thigh_r=0.15 + n(0.2), thigh_l=0.15 + n(0.2))
        p["lift_r"], p["lift_l"] = np.maximum(0, n(0.9)), np.maximum(0, n(0.9))
    elif kind == "wave":
        side = "r" if rng.random() < 0.5 else "l"
        f = rng.uniform(0.8, 1.5)
        p[f"shoulder_{side}"] = 2.3 + n(0.15)
        p[f"elbow_{side}"] = 0.5 + 0.45 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        p[f"open_{side}"] = np.full(frames, 1.0)
    elif kind == "walk":
        f = rng.uniform(0.7, 1.1)
        phase = 2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)
        p["lift_r"], p["lift_l"] = 0.9 * np.maximum(0, np.sin(phase)), 0.9 * np.maximum(0, -np.sin(phase))
        p["shoulder_r"] = 0.25 + 0.3 * np.maximum(0, -np.sin(phase))
        p["shoulder_l"] = 0.25 + 0.3 * np.maximum(0, np.sin(phase))
        p["elbow_r"], p["elbow_l"] = 0.4 + 0.3 * np.maximum(0, -np.sin(phase)), 0.4 + 0.3 * np.maximum(0, np.sin(phase))
        p["y"] = -0.015 * np.abs(np.sin(phase))
    elif kind == "turn_head":
        f = rng.uniform(0.4, 0.8)
        p["yaw"] = 0.8 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        p["roll"] = n(0.25)
    elif kind == "hands":
        f = rng.uniform(0.6, 1.2)
        for side, shift in (("r", 0.0), ("l", rng.uniform(0, np.pi))):
            p[f"shoulder_{side}"] = 1.2 + n(0.2)
            p[f"elbow_{side}"] = 1.2 + n(0.25)
            p[f"open_{side}"] = 0.5 + 0.5 * np.sin(2 * np.pi * f * t + shift)
    else:
        check_motion(kind)
    p["open_r"], p["open_l"] = np.clip(p["open_r"], 0, 1), np.clip(p["open_l"], 0, 1)
    return p


def motion(kind: str, frames: int, seed: int, size: int = 128, body_seed: int | None = None,
           fps: float = 12.0) -> PoseSequence:
    """``frames`` whole-body poses of one motion kind on a ``size`` px square canvas, every point visible.

    ``seed`` picks the motion's parameters and, unless ``body_seed`` is given, the body's proportions: the same
    motion on another body (the same ``seed`` with another ``body_seed``) is how the world makes ground truth for
    retargeting."""
    check_motion(kind)
    check_frames(frames)
    check_size(size)
    shape = body(seed if body_seed is None else body_seed)
    p = _motion_parameters(kind, frames, np.random.default_rng([seed, 4, MOTIONS.index(kind)]), fps)
    torso = shape.torso * size
    points = np.zeros((frames, NUM_POINTS, 2))
    for f in range(frames):
        up = -_direction(p["lean"][f])
        across = _rotate(np.array([[1.0, 0.0]]), p["lean"][f])[0]
        standing = GROUND * size - (shape.thigh + shape.shin) * torso  # hip height with the feet on the floor
        hip_centre = np.array([p["x"][f] * size, standing + p["y"][f] * size])
        neck = hip_centre + up * torso
        frame = np.zeros((NUM_POINTS, 2))
        b, feet = frame[BODY], frame[FEET]
        b[1] = neck
        for side, name, (shoulder_i, elbow_i, wrist_i, hip_i, knee_i, ankle_i), hand in (
                (-1, "r", (2, 3, 4, 8, 9, 10), RIGHT_HAND), (1, "l", (5, 6, 7, 11, 12, 13), LEFT_HAND)):
            shoulder = neck + side * across * shape.shoulder * torso
            upper_angle = p["lean"][f] + side * p[f"shoulder_{name}"][f]
            elbow = shoulder + _direction(upper_angle) * shape.upper_arm * torso
            fore_angle = upper_angle + side * p[f"elbow_{name}"][f]
            wrist = elbow + _direction(fore_angle) * shape.forearm * torso
            b[shoulder_i], b[elbow_i], b[wrist_i] = shoulder, elbow, wrist
            frame[hand] = _hand(wrist, fore_angle + side * p[f"wrist_{name}"][f], p[f"open_{name}"][f],
                                shape.hand * torso, side)
            hip = hip_centre + side * across * shape.hip * torso
            thigh_angle = side * p[f"thigh_{name}"][f]
            lift = p[f"lift_{name}"][f]
            knee = hip + _direction(thigh_angle) * shape.thigh * torso * np.cos(lift)
            ankle = knee + _direction(thigh_angle * 0.5) * shape.shin * torso
            b[hip_i], b[knee_i], b[ankle_i] = hip, knee, ankle
            toe = 1 if side == 1 else -1
            foot = slice(0, 3) if side == 1 else slice(3, 6)  # left big toe, small toe, heel, then the right foot
            feet[foot] = ankle + np.array([[toe * 0.16, 0.12], [toe * 0.26, 0.1], [-toe * 0.04, 0.08]]) * torso
        radius = shape.head * torso
        head_centre = neck + up * (0.12 * torso + radius)
        face = _FACE_POINTS.copy()
        yaw = p["yaw"][f]
        face[:, 0] = face[:, 0] * np.cos(yaw) + _FACE_DEPTH * np.sin(yaw)
        face = head_centre + _rotate(face, p["roll"][f] + p["lean"][f]) * radius
        frame[FACE] = face
        b[0] = face[30]  # nose tip
        b[14], b[15] = face[36:42].mean(axis=0), face[42:48].mean(axis=0)
        b[16], b[17] = face[0], face[16]
        points[f] = frame
    return PoseSequence(points, np.ones((frames, NUM_POINTS)), size, size)


# ------------------------------------------------------------------------------------------- rendering
def _pt(point) -> tuple[int, int]:
    return int(round(point[0] * 16)), int(round(point[1] * 16))  # 4 fractional bits (cv2 shift=4)


class _Canvas:
    """An RGB image and its label map, painted together."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.labels = np.zeros(image.shape[:2], dtype=np.uint8)

    def _paint(self, draw, colour, label: str) -> None:
        draw(self.image, tuple(int(c) for c in colour))
        draw(self.labels, LABELS.index(label))

    def line(self, a, b, thickness: float, colour, label: str) -> None:
        self._paint(lambda img, c: cv2.line(img, _pt(a), _pt(b), c, max(1, int(round(thickness))), cv2.LINE_8, 4),
                    colour, label)

    def polygon(self, points, colour, label: str) -> None:
        pts = np.array([_pt(p) for p in points], dtype=np.int32)
        self._paint(lambda img, c: cv2.fillPoly(img, [pts], c, cv2.LINE_8, 4), colour, label)

    def ellipse(self, centre, axes, angle: float, colour, label: str) -> None:
        axes = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
        self._paint(lambda img, c: cv2.ellipse(img, _pt(centre), axes, angle, 0, 360, c, -1, cv2.LINE_8, 4),
                    colour, label)

    def polyline(self, points, closed: bool, thickness: int, colour, label: str) -> None:
        pts = np.array([_pt(p) for p in points], dtype=np.int32)
        self._paint(lambda img, c: cv2.polylines(img, [pts], closed, c, thickness, cv2.LINE_8, 4), colour, label)


def render_frame(points: np.ndarray, person: Identity, room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame: the person on ``points`` [134, 2] over ``room``; returns (uint8 RGB [H, W, 3], labels [H, W])."""
    size = room.shape[0]
    unit = size / 128  # thickness scale
    canvas = _Canvas(room.copy())
    body = points[BODY]
    face = points[FACE]
    torso_len = np.linalg.norm(body[1] - (body[8] + body[11]) / 2)
    thick = person.build * torso_len
    head_centre = face[27:31].mean(axis=0) * 0.5 + face[[0, 16]].mean(axis=0) * 0.5
    radius = np.linalg.norm(face[16] - face[0]) / 2 / 0.82
    roll = np.degrees(np.arctan2(face[16][1] - face[0][1], face[16][0] - face[0][0]))
    if person.long_hair:  # behind the body
        down = np.array([-np.sin(np.radians(roll)), np.cos(np.radians(roll))])
        canvas.polygon([head_centre - [radius, 0], head_centre + [radius, 0],
                        head_centre + [radius * 0.9, 0] + down * radius * 1.9,
                        head_centre - [radius * 0.9, 0] + down * radius * 1.9], person.hair_rgb, "hair")
    for hip, knee, ankle, foot in ((8, 9, 10, FEET.start + 3), (11, 12, 13, FEET.start)):  # legs
        canvas.line(body[hip], body[knee], 0.3 * thick, person.trousers_rgb, "trousers")
        canvas.line(body[knee], body[ankle], 0.26 * thick, person.trousers_rgb, "trousers")
        toe = points[foot]
        canvas.line(body[ankle], toe, 0.16 * thick, person.shoes_rgb, "shoes")
    shoulders, hips = body[[2, 5]], body[[8, 11]]
    out = (shoulders[1] - shoulders[0]) / (np.linalg.norm(shoulders[1] - shoulders[0]) + 1e-9)
    torso = [shoulders[0] - out * 0.08 * thick, shoulders[1] + out * 0.08 * thick,
             hips[1] + out * 0.1 * thick, hips[0] - out * 0.1 * thick]
    canvas.line(body[1], head_centre, 0.18 * thick, person.skin_rgb, "neck")
    before = canvas.labels.copy()
    canvas.polygon(torso, person.shirt_rgb, "torso")
    torso_mask = (canvas.labels == LABELS.index("torso")) & (before != LABELS.index("torso"))
    ys = np.arange(size)[:, None] - body[1][1]
    stripes = torso_mask & ((np.floor(ys / (person.stripe_period * unit)) % 2) == 1)
    canvas.image[stripes] = person.stripe_rgb
    # head: hair cap, face, features
    canvas.ellipse(head_centre - [0, 0.12 * radius], (radius * 0.98, radius * 1.02), roll, person.hair_rgb, "hair")
    canvas.ellipse(head_centre + [0, 0.1 * radius], (radius * 0.8, radius * 0.86), roll, person.skin_rgb, "face")
    feature_width = max(1, int(round(unit)))
    canvas.polyline(face[17:22], False, feature_width, FEATURE_COLOUR, "features")
    canvas.polyline(face[22:27], False, feature_width, FEATURE_COLOUR, "features")
    for eye in (face[36:42], face[42:48]):
        canvas.ellipse(eye.mean(axis=0), (max(0.8 * unit, np.ptp(eye[:, 0]) / 2), max(0.8 * unit, np.ptp(eye[:, 1]))),
                       roll, FEATURE_COLOUR, "features")
    canvas.polyline(face[48:60], True, feature_width, MOUTH_COLOUR, "features")
    for shoulder, elbow, wrist, hand in ((2, 3, 4, RIGHT_HAND), (5, 6, 7, LEFT_HAND)):  # arms in front
        canvas.line(body[shoulder], body[elbow], 0.24 * thick, person.shirt_rgb, "sleeves")
        canvas.line(body[elbow], body[wrist], 0.17 * thick, person.skin_rgb, "forearms")
        fingers = points[hand]
        palm = fingers[[0, 5, 9, 13, 17]]
        canvas.polygon(palm, person.skin_rgb, "hands")
        canvas.ellipse(palm.mean(axis=0), (0.09 * thick,) * 2, 0, person.skin_rgb, "hands")
        for start in (1, 5, 9, 13, 17):
            canvas.polyline(fingers[[0] + list(range(start, start + 4))][1:], False, max(1, int(round(0.9 * unit))),
                            person.skin_rgb, "hands")
    return canvas.image, canvas.labels


def render(poses: PoseSequence, person: Identity, room: np.ndarray, with_labels: bool = False):
    """The person on every pose of ``poses`` over the static ``room``: uint8 frames [F, H, W, 3] (and the label
    maps [F, H, W] when ``with_labels``). The room must be the poses' canvas size."""
    if room.shape[:2] != (poses.canvas_height, poses.canvas_width):
        raise ValueError(f"background is {room.shape[1]}x{room.shape[0]} but the poses are on a "
                         f"{poses.canvas_width}x{poses.canvas_height} canvas: make both the same size")
    frames, labels = zip(*(render_frame(points, person, room) for points in poses.points))
    frames, labels = np.stack(frames), np.stack(labels)
    return (frames, labels) if with_labels else frames
