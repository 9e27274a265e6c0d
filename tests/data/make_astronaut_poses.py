"""Regenerates tests/data/astronaut_mediapipe_poses.json: real detected landmarks for the retargeting tests.

Not run by the test suite. Needs mediapipe 0.10.21 (the last release whose wheel ships the Holistic
pose, face-mesh and hand models, so it runs offline) and scikit-image, in a venv of their own
(mediapipe needs protobuf < 5, which clashes with onnx):

    python3 -m venv /work/venvs/mediapipe
    /work/venvs/mediapipe/bin/pip install mediapipe==0.10.21 scikit-image
    /work/venvs/mediapipe/bin/python tests/data/make_astronaut_poses.py

The photo is scikit-image's ``data.astronaut()``: Eileen Collins, NASA portrait, public domain (scikit-image
says "No known copyright restrictions, released into the public domain"). It shows the head and upper
body; the hands are hidden by the gloves and the helmet, and the legs are outside the frame, so those
points are missing in every frame, as a detector would leave them.

Frames: the photo warped by known affines (rotation about the image centre, scale, shift), each detected
on its own (static image mode), so the landmarks carry the detector's real noise. ``rescaled`` is every
warped frame resized by RESCALE onto a smaller canvas and detected again.

Mapping from mediapipe to our 134-point OpenPose layout (pose 33 -> body 18 + feet 6, face mesh 468 ->
face 68, hands 21 -> 21):
- body: nose, shoulders, elbows, wrists, hips, knees, ankles, eyes (mediapipe's eye centres) and ears have
  counterparts with the same meaning; the neck is the shoulders' mean, as DWPose synthesises it. Mediapipe's
  hips sit higher and wider than COCO's, so torso lengths are comparable only between mediapipe poses.
- feet: big toe <- foot index, heel <- heel; the small toe has no counterpart and stays missing.
- face: the 51 inner points (brows, nose, eyes, mouth) and the chin take the face-mesh vertex at the same
  anatomical spot; the other 16 jaw points are silhouette points of the iBUG scheme, which no mesh vertex
  follows, so they stay missing.
- hands: the same 21 points in the same order.
A point is kept (confidence 1.0, as comfyui_controlnet_aux writes) when it lies inside the frame and, for
pose landmarks, mediapipe's visibility is at least POSE_VISIBILITY.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from posecrafter.pose import FACE, FEET, LEFT_HAND, NUM_POINTS, RIGHT_HAND, PoseSequence, to_pose_keypoint  # noqa: E402

OUTPUT = Path(__file__).with_name("astronaut_mediapipe_poses.json")
RESCALE = 0.75
POSE_VISIBILITY = 0.5
FRAMES = 24
# Per frame: rotation in degrees about the image centre, scale, shift x and y in pixels (frame 0: the photo).
_rng = np.random.default_rng(0)
AFFINES = [(0.0, 1.0, 0.0, 0.0)] + [
    (float(_rng.uniform(-12, 12)), float(_rng.uniform(0.9, 1.08)), *map(float, _rng.uniform(-30, 30, 2)))
    for _ in range(FRAMES - 1)
]

# OpenPose body index -> mediapipe pose landmark (the neck, 1, is the shoulders' mean).
BODY_FROM_POSE = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28,
                  11: 23, 12: 25, 13: 27, 14: 5, 15: 2, 16: 8, 17: 7}
# Feet 0-5 (L big toe, L small toe, L heel, R big toe, R small toe, R heel) -> pose landmark.
FEET_FROM_POSE = {0: 31, 2: 29, 3: 32, 5: 30}
# iBUG-68 face index -> face-mesh vertex.
FACE_FROM_MESH = {
    8: 152,
    17: 70, 18: 63, 19: 105, 20: 66, 21: 107, 22: 336, 23: 296, 24: 334, 25: 293, 26: 300,
    27: 168, 28: 197, 29: 5, 30: 4, 31: 98, 32: 97, 33: 2, 34: 326, 35: 327,
    36: 33, 37: 160, 38: 158, 39: 133, 40: 153, 41: 144, 42: 362, 43: 385, 44: 387, 45: 263, 46: 373, 47: 380,
    48: 61, 49: 40, 50: 37, 51: 0, 52: 267, 53: 270, 54: 291, 55: 321, 56: 314, 57: 17, 58: 84, 59: 91,
    60: 78, 61: 81, 62: 13, 63: 311, 64: 308, 65: 402, 66: 14, 67: 178,
}


def warped_frames(image: np.ndarray) -> tuple[list[np.ndarray], list[list[list[float]]]]:
    height, width = image.shape[:2]
    frames, matrices = [], []
    for angle, scale, dx, dy in AFFINES:
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        matrix[:, 2] += (dx, dy)
        frames.append(cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE))
        matrices.append(matrix.tolist())
    return frames, matrices


def detect(holistic, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame -> (points [134, 2] in pixels, scores [134]) in our layout."""
    height, width = frame.shape[:2]
    result = holistic.process(frame)
    points, scores = np.zeros((NUM_POINTS, 2)), np.zeros(NUM_POINTS)

    def put(index, landmark, visible=True):
        xy = np.array([landmark.x * width, landmark.y * height])
        if visible and 0 <= xy[0] < width and 0 <= xy[1] < height:
            points[index], scores[index] = xy, 1.0

    if result.pose_landmarks:
        pose = result.pose_landmarks.landmark
        for ours, theirs in BODY_FROM_POSE.items():
            put(ours, pose[theirs], pose[theirs].visibility >= POSE_VISIBILITY)
        for ours, theirs in FEET_FROM_POSE.items():
            put(FEET.start + ours, pose[theirs], pose[theirs].visibility >= POSE_VISIBILITY)
        if scores[2] and scores[5]:
            points[1], scores[1] = points[[2, 5]].mean(axis=0), 1.0
    if result.face_landmarks:
        mesh = result.face_landmarks.landmark
        for ours, theirs in FACE_FROM_MESH.items():
            put(FACE.start + ours, mesh[theirs])
    for hand, part in ((result.left_hand_landmarks, LEFT_HAND), (result.right_hand_landmarks, RIGHT_HAND)):
        if hand:
            for i, landmark in enumerate(hand.landmark):
                put(part.start + i, landmark)
    return points, scores


def detect_all(frames: list[np.ndarray]) -> PoseSequence:
    with mp.solutions.holistic.Holistic(static_image_mode=True, model_complexity=1) as holistic:
        detections = [detect(holistic, frame) for frame in frames]
    height, width = frames[0].shape[:2]
    return PoseSequence(np.stack([d[0] for d in detections]), np.stack([d[1] for d in detections]), width, height)


def rounded(pose_keypoint: list[dict]) -> list[dict]:
    """Coordinates to 0.001 px, which keeps the file small."""
    for frame in pose_keypoint:
        for person in frame["people"]:
            for key, values in person.items():
                if values is not None:
                    person[key] = [round(v, 3) for v in values]
    return pose_keypoint


def main() -> None:
    image = data.astronaut()
    frames, matrices = warped_frames(image)
    rescaled_frames = [cv2.resize(f, None, fx=RESCALE, fy=RESCALE, interpolation=cv2.INTER_AREA) for f in frames]
    record = {
        "source": "scikit-image data.astronaut() (Eileen Collins, NASA, public domain), detected with mediapipe "
                  f"{mp.__version__} Holistic; regenerate with tests/data/make_astronaut_poses.py",
        "affines": matrices,
        "rescale": RESCALE,
        "poses": rounded(to_pose_keypoint(detect_all(frames))),
        "rescaled_poses": rounded(to_pose_keypoint(detect_all(rescaled_frames))),
    }
    OUTPUT.write_text(json.dumps(record, indent=None))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
