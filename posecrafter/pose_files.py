"""Pose sequences in files: reading the pose files users have, writing our own (spec 7.5).

Formats read:
- a JSON list of POSE_KEYPOINT frames, as PoseCrafter Save Poses and comfyui_controlnet_aux's pose saver write it;
- a single frame (one dict with ``people``);
- OpenPose's per-frame ``*_keypoints.json`` files, in a folder or a zip, in natural order of their names
  (``frame_2`` before ``frame_10``). OpenPose writes no canvas size, so the caller gives it; its BODY_25
  body (25 points: COCO-18 plus mid-hip and six foot points) is converted to the COCO-18 body and
  ``foot_keypoints_2d``.
Every frame is checked by ``from_pose_keypoint``; errors name the file (and the member of a zip or folder).
"""
from __future__ import annotations

import json
import os
import re
import zipfile

from .pose import from_pose_keypoint

KEYPOINT_FILE_SUFFIX = "_keypoints.json"
SAVED_SUFFIX = ".json"
EXPECTED = (
    "expected pose JSON: a list of frames {\"people\": [...], \"canvas_width\": ..., \"canvas_height\": ...} as "
    "PoseCrafter Save Poses and comfyui_controlnet_aux write them, one such frame, or a folder or zip of OpenPose "
    "*_keypoints.json files"
)
# OpenPose BODY_25 -> COCO-18: BODY_25 has MidHip at 8, so the hips and legs sit one place later; 19-24 are the feet
# in DWPose's order (left big toe, left small toe, left heel, then the right foot).
BODY_25_TO_COCO_18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
BODY_25_FEET = list(range(19, 25))


def natural_key(name: str) -> list:
    """Sort key that orders the numbers inside names by value: frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_pose_files(folder: str) -> list[str]:
    """Names ('sub/moves.json') of what ``read_pose_file`` may read in ``folder`` and its subfolders: .json and
    .zip files, and folders of OpenPose keypoint files (listed once, not file by file)."""
    names = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        rel = os.path.relpath(here, folder)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if rel != "." and any(f.endswith(KEYPOINT_FILE_SUFFIX) for f in files):
            names.append(rel.replace(os.sep, "/"))
            dirs.clear()
            continue
        names += [os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/") for f in files
                  if f.lower().endswith((".json", ".zip")) and not f.startswith(".")]
    return sorted(names, key=natural_key)


def read_pose_file(path: str, name: str, canvas_size: tuple[int, int] | None = None) -> list[dict]:
    """The POSE_KEYPOINT frames of a pose file, zip or folder at ``path`` (``name`` in messages).

    Frames without a canvas size (OpenPose files) get ``canvas_size`` (width, height): the size of the frames
    the poses were detected on; without it they are refused.
    """
    if not os.path.exists(path):
        raise ValueError(f"{name}: not found ({path})")
    if os.path.isdir(path):
        members = sorted((f for f in os.listdir(path) if f.endswith(KEYPOINT_FILE_SUFFIX)
                          and os.path.isfile(os.path.join(path, f))), key=natural_key)
        sources = [(f"{name}/{member}", _read_bytes(os.path.join(path, member))) for member in members]
        kind = "folder"
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = sorted((m for m in archive.namelist() if m.endswith(KEYPOINT_FILE_SUFFIX)
                                  and not m.startswith("__MACOSX/")), key=natural_key)
                sources = [(f"{name}/{member}", archive.read(member)) for member in members]
        except (zipfile.BadZipFile, NotImplementedError) as err:  # damaged, or compressed in a way Python cannot read
            raise ValueError(f"{name}: this zip cannot be read ({err}); zip the keypoint files again") from None
        kind = "zip"
    else:
        frames = _frames(_parse(_read_bytes(path), name), name)
        frames = [_with_canvas(frame, canvas_size, f"{name}[{f}]") for f, frame in enumerate(frames)]
        from_pose_keypoint(frames, name)
        return frames
    if not sources:
        raise ValueError(
            f"{name}: this {kind} holds no OpenPose *{KEYPOINT_FILE_SUFFIX} files; {EXPECTED} "
            f"(one per frame, e.g. video_000000000000{KEYPOINT_FILE_SUFFIX})"
        )
    frames = []
    for where, data in sources:
        document = _parse(data, where)
        if not _is_frame(document):
            raise ValueError(f"{where}: expected one OpenPose frame {{\"people\": [...]}}, got {_describe(document)}")
        frame = _with_canvas(document, canvas_size, where)
        from_pose_keypoint([frame], where)
        frames.append(frame)
    return frames


def select_frames(frames: list, skip_first_frames: int, select_every_nth: int, frame_load_cap: int,
                  name: str) -> list:
    """Frames skip_first_frames, skip_first_frames + select_every_nth, ..., at most frame_load_cap (0 = all)."""
    if skip_first_frames < 0 or select_every_nth < 1 or frame_load_cap < 0:
        raise ValueError(f"{name}: needs skip_first_frames >= 0, select_every_nth >= 1 and frame_load_cap >= 0, got "
                         f"{skip_first_frames}, {select_every_nth} and {frame_load_cap}")
    selected = frames[skip_first_frames::select_every_nth][:frame_load_cap or None]
    if not selected:
        raise ValueError(f"{name}: skip_first_frames {skip_first_frames} leaves none of its {len(frames)} frames; "
                         f"use 0..{len(frames) - 1}")
    return selected


def write_pose_file(frames: list[dict], path_prefix: str) -> str:
    """Write ``frames`` as a JSON list to ``path_prefix``_NNNNN_.json with the next free counter, as ComfyUI's
    savers number their files; its folder is made. Nothing is written when the frames are refused."""
    from_pose_keypoint(frames, "pose")
    text = json.dumps(frames)
    directory, base = os.path.split(path_prefix)
    os.makedirs(directory, exist_ok=True)
    pattern = re.compile(re.escape(base) + r"_(\d{5,})_" + re.escape(SAVED_SUFFIX) + "$")
    taken = [int(m.group(1)) for m in map(pattern.match, os.listdir(directory)) if m]
    path = f"{path_prefix}_{max(taken, default=0) + 1:05}_{SAVED_SUFFIX}"
    with open(path, "x", encoding="utf-8") as file:
        file.write(text)
    return path


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _parse(data: bytes, where: str):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: is not a text file; {EXPECTED}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                         f"{EXPECTED}") from None


def _is_frame(document) -> bool:
    return isinstance(document, dict) and "people" in document


def _frames(document, name: str) -> list[dict]:
    """The frames of a parsed pose JSON: a list of frames or one frame."""
    if _is_frame(document):
        return [document]
    if not isinstance(document, list):
        raise ValueError(f"{name}: {EXPECTED}; got {_describe(document)}")
    if not document:
        raise ValueError(f"{name}: holds an empty list, no frames; save poses of at least one frame")
    for f, frame in enumerate(document):
        if not _is_frame(frame):
            raise ValueError(f"{name}[{f}]: {EXPECTED}; frame {f} is {_describe(frame)}")
    return document


def _describe(value) -> str:
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:6])) + (", ..." if len(value) > 6 else "")
        return f"a dict with keys {keys}" if value else "an empty dict"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"


def _with_canvas(frame: dict, canvas_size: tuple[int, int] | None, where: str) -> dict:
    """The frame with a canvas size (given when it has none) and OpenPose BODY_25 bodies as COCO-18 + feet."""
    if "canvas_width" not in frame and "canvas_height" not in frame:
        if canvas_size is None:
            raise ValueError(
                f"{where}: has no canvas_width/canvas_height (OpenPose files do not record them): give the width "
                "and height of the frames these poses were detected on"
            )
        frame = {**frame, "canvas_width": canvas_size[0], "canvas_height": canvas_size[1]}
    people = frame.get("people")
    if isinstance(people, list) and any(_is_body_25(person) for person in people):
        frame = {**frame, "people": [_coco_18(person) if _is_body_25(person) else person for person in people]}
    return frame


def _is_body_25(person) -> bool:
    body = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
    return isinstance(body, list) and len(body) == 25 * 3 and not person.get("foot_keypoints_2d")


def _coco_18(person: dict) -> dict:
    points = [person["pose_keypoints_2d"][3 * i:3 * i + 3] for i in range(25)]
    return {**person, "pose_keypoints_2d": [v for i in BODY_25_TO_COCO_18 for v in points[i]],
            "foot_keypoints_2d": [v for i in BODY_25_FEET for v in points[i]]}
