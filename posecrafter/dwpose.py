"""DWPose whole-body pose extraction on onnxruntime (spec 7.1, 7.3).

YOLOX-L finds person boxes (``yolox_l.onnx``), the DWPose model (``dw-ll_ucoco_384.onnx``) finds
133 COCO-WholeBody keypoints in each box, and the result is converted to the OpenPose-ordered
134-point layout of ``posecrafter.pose``. One person per frame: the box whose keypoints have the
highest summed score (spec 9 #19).
"""
from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .pose import NUM_POINTS, VISIBLE_SCORE, PoseSequence, interpolate_empty_frames

logger = logging.getLogger(__name__)

DETECTOR_FILE = "yolox_l.onnx"
POSE_MODEL_FILE = "dw-ll_ucoco_384.onnx"
MODEL_SOURCE = "https://huggingface.co/yzd-v/DWPose"

# Detector (spec 7.3)
DETECTOR_SIZE = 640
DETECTOR_STRIDES = (8, 16, 32)
DETECTOR_CLASSES = 80
LETTERBOX_FILL = 114
CANDIDATE_SCORE = 0.1
NMS_IOU = 0.45
PERSON_SCORE = 0.3

# Pose model (spec 7.3)
WHOLEBODY_POINTS = 133
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2
PIXEL_MEAN = np.array([123.675, 116.28, 103.53])
PIXEL_STD = np.array([58.395, 57.12, 57.375])
NECK_SHOULDER_SCORE = 0.3
# For OpenPose body index j (0..17): the COCO index it takes after the neck was inserted at 17 (spec 7.1).
OPENPOSE_FROM_COCO = [0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]


def letterbox(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """Detector input (spec 7.3): resize by r = min(640/H, 640/W), paste top-left on a 114-filled
    640x640 canvas; raw 0-255 RGB as float32 [3, 640, 640]. Returns the input and r."""
    height, width = frame.shape[:2]
    ratio = min(DETECTOR_SIZE / height, DETECTOR_SIZE / width)
    resized = cv2.resize(frame, (int(width * ratio), int(height * ratio)), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((DETECTOR_SIZE, DETECTOR_SIZE, 3), LETTERBOX_FILL, dtype=np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas.transpose(2, 0, 1).astype(np.float32), ratio


def _anchor_grid() -> tuple[np.ndarray, np.ndarray]:
    """(x, y) cell of every YOLOX output row and its stride: rows go stride 8, 16, 32, row-major."""
    cells, strides = [], []
    for stride in DETECTOR_STRIDES:
        side = DETECTOR_SIZE // stride
        ys, xs = np.mgrid[0:side, 0:side]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full(side * side, stride))
    return np.concatenate(cells), np.concatenate(strides)[:, None]


def decode_person_boxes(prediction: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX output [8400, 85] -> person boxes [n, 4] (x0, y0, x1, y1 in frame pixels) and scores [n],
    best first (spec 7.3). NMS is class-aware, so other classes never suppress a person and only the
    person class needs it."""
    cells, strides = _anchor_grid()
    centres = (prediction[:, :2] + cells) * strides
    sizes = np.exp(prediction[:, 2:4]) * strides
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1) / ratio
    scores = prediction[:, 4] * prediction[:, 5]  # objectness x person class score
    candidates = scores > CANDIDATE_SCORE
    boxes, scores = boxes[candidates], scores[candidates]
    kept = non_maximum_suppression(boxes, scores)
    kept = [i for i in kept if scores[i] > PERSON_SCORE]
    return boxes[kept].reshape(-1, 4), scores[kept]


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    """Greedy NMS as in the YOLOX demo: box areas use the '+1' pixel convention, and a box is dropped
    when its IoU with a kept, higher-scoring box exceeds 0.45. (cv2.dnn.NMSBoxes has no '+1'.)"""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = list(np.argsort(-scores, kind="stable"))
    kept = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=int)
        kept.append(int(best))
        overlap_w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        overlap_h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        overlap = overlap_w * overlap_h
        iou = overlap / (areas[best] + areas[rest] - overlap)
        order = list(rest[iou <= NMS_IOU])
    return kept


def pose_crop(frame: np.ndarray, box: np.ndarray,
              input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose model input (spec 7.3): the box padded by 1.25, its short side widened to the input's aspect
    ratio, warped to input_size = (width, height) with INTER_LINEAR and a black border, then normalised
    with the ImageNet mean/std in RGB order. Returns the input [3, h, w] float32, the crop centre and
    the crop size (w, h) in frame pixels."""
    width, height = input_size
    centre = (box[:2] + box[2:]) / 2
    crop_w, crop_h = (box[2:] - box[:2]) * BOX_PADDING
    aspect = width / height
    if crop_w > crop_h * aspect:
        crop_h = crop_w / aspect
    else:
        crop_w = crop_h * aspect
    scale = np.array([crop_w, crop_h])
    zoom = width / crop_w  # equals height / crop_h
    warp = np.array([[zoom, 0.0, width / 2 - centre[0] * zoom], [0.0, zoom, height / 2 - centre[1] * zoom]])
    crop = cv2.warpAffine(frame, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
    normalised = (crop - PIXEL_MEAN) / PIXEL_STD
    return normalised.transpose(2, 0, 1).astype(np.float32), centre, scale


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                 input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """SimCC decoding (spec 7.3): argmax bin / split ratio 2 gives crop pixels, score = min of the two
    maxima (a location whose score is <= 0 is set to -1), then crop pixels -> frame pixels.
    simcc_x [K, 2w], simcc_y [K, 2h] -> points [K, 2], scores [K]."""
    locations = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=1) / SIMCC_SPLIT_RATIO
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    locations[scores <= 0] = -1
    points = locations / np.asarray(input_size) * scale + centre - scale / 2
    return points, scores


def wholebody_to_openpose(points: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 COCO-WholeBody keypoints -> the 134-point OpenPose-ordered layout (spec 7.1): a neck at the
    shoulders' mean (score 1 if both shoulder scores are > 0.3, else 0) inserted at 17, then the first
    18 permuted into OpenPose order. Feet, face and hands keep their order."""
    neck = points[[5, 6]].mean(axis=0)
    neck_score = 1.0 if scores[5] > NECK_SHOULDER_SCORE and scores[6] > NECK_SHOULDER_SCORE else 0.0
    points = np.insert(points, 17, neck, axis=0)
    scores = np.insert(scores, 17, neck_score)
    points[:18], scores[:18] = points[OPENPOSE_FROM_COCO], scores[OPENPOSE_FROM_COCO]
    return points, scores


def find_model_file(file_name: str, model_dirs: Sequence[str | Path]) -> Path:
    """The first file called ``file_name`` in ``model_dirs``, searched recursively in the given order
    (comfyui_controlnet_aux keeps it at ckpts/yzd-v/DWPose/<file>)."""
    for directory in map(Path, model_dirs):
        if not directory.is_dir():
            continue
        if (directory / file_name).is_file():
            return directory / file_name
        found = sorted(path for path in directory.rglob(file_name) if path.is_file())
        if found:
            return found[0]
    searched = ", ".join(str(d) for d in model_dirs) or "(no folders given)"
    raise ValueError(
        f"model_dirs: {file_name} was not found in {searched}; download {file_name} from {MODEL_SOURCE} "
        "into ComfyUI/models/dwpose"
    )


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "DWPose extraction needs onnxruntime: install 'onnxruntime-gpu' (NVIDIA GPU) or 'onnxruntime' (CPU only) "
            "into ComfyUI's Python, e.g. python -m pip install onnxruntime-gpu"
        ) from err
    return onnxruntime


def onnxruntime_conflict() -> str | None:
    """A warning when both onnxruntime distributions are installed, else None. They write the same
    ``onnxruntime`` package, so the one installed last is what Python imports, and removing either one
    breaks the other; the warning says which build is imported and the pip commands that leave one."""
    installed = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(name)
            installed.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    if len(installed) < 2:
        return None
    try:
        has_cuda = "CUDAExecutionProvider" in _import_onnxruntime().get_available_providers()
        imported = "onnxruntime-gpu's build (it has the CUDA provider)" if has_cuda else "the CPU-only build of onnxruntime"
    except ImportError as err:
        imported = f"neither: importing onnxruntime fails ({err.__cause__})"
    return (
        "both onnxruntime and onnxruntime-gpu are installed. They share one 'onnxruntime' package, so which one "
        f"Python imports depends on the install order; it imports {imported}. Keep one, with ComfyUI's Python: "
        "python -m pip uninstall -y onnxruntime onnxruntime-gpu, then python -m pip install onnxruntime-gpu "
        "(NVIDIA GPU) or python -m pip install onnxruntime (CPU only)"
    )


def choose_providers(available: Sequence[str], cuda_gpu: bool) -> tuple[list[str], str | None]:
    """The onnxruntime execution providers to ask for, and why the CPU is used (None when CUDA is asked for).

    CUDA only when onnxruntime has its provider and there is a CUDA GPU (``cuda_gpu``, from PyTorch):
    onnxruntime-gpu asked for CUDA on a machine without one prints "Failed to load libcublasLt..." errors
    at every session before it falls back to the CPU.
    """
    has_provider = "CUDAExecutionProvider" in available
    if has_provider and cuda_gpu:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], None
    if has_provider:
        return ["CPUExecutionProvider"], "onnxruntime-gpu is installed but PyTorch sees no CUDA GPU"
    if cuda_gpu:
        return ["CPUExecutionProvider"], (
            "the installed onnxruntime has no CUDA provider; install onnxruntime-gpu (for your CUDA version) into "
            "ComfyUI's Python to run it on the GPU"
        )
    return ["CPUExecutionProvider"], "there is no CUDA GPU"


def _cuda_gpu() -> bool:
    """Whether PyTorch has a usable NVIDIA CUDA device (ROCm builds report HIP devices as cuda too)."""
    return torch.version.cuda is not None and torch.cuda.is_available()


def _open_session(onnxruntime, path: Path, providers: list[str]):
    """An onnxruntime session asking for ``providers`` in order."""
    try:
        return onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise ValueError(
            f"{path.name}: {path} is not a loadable ONNX model ({err}); replace it with the original file from "
            f"{MODEL_SOURCE}"
        ) from err


def _matches(shape, expected) -> bool:
    """Shape check where a batch dimension of 1 or a symbolic/unknown size is accepted."""
    return len(shape) == len(expected) and all(
        e is None and (s == 1 or not isinstance(s, int)) or s == e for s, e in zip(shape, expected)
    )


def _describe(values) -> str:
    return ", ".join(f"{v.name} {list(v.shape)}" for v in values)


def _check_detector(session, path: Path) -> None:
    anchors = sum((DETECTOR_SIZE // s) ** 2 for s in DETECTOR_STRIDES)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if not (
        len(inputs) == 1 and _matches(inputs[0].shape, [None, 3, DETECTOR_SIZE, DETECTOR_SIZE])
        and len(outputs) == 1 and _matches(outputs[0].shape, [None, anchors, 5 + DETECTOR_CLASSES])
    ):
        raise ValueError(
            f"{DETECTOR_FILE}: {path} is not the YOLOX-L detector (expected one input [1, 3, {DETECTOR_SIZE}, "
            f"{DETECTOR_SIZE}] and output [1, {anchors}, {5 + DETECTOR_CLASSES}]; got inputs {_describe(inputs)}, "
            f"outputs {_describe(outputs)}); replace it with {DETECTOR_FILE} from {MODEL_SOURCE}"
        )


def _check_pose_model(session, path: Path) -> tuple[int, int]:
    """Validate the DWPose graph and return its input size (width, height), read from the model. Inputs and
    outputs are checked by shape and order (SimCC x, then y), not by name, as every DWPose runner reads them."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    height, width = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    valid = (
        len(inputs) == 1 and isinstance(width, int) and isinstance(height, int)
        and _matches(shape, [None, 3, height, width]) and len(outputs) == 2
        and _matches(outputs[0].shape, [None, WHOLEBODY_POINTS, width * SIMCC_SPLIT_RATIO])
        and _matches(outputs[1].shape, [None, WHOLEBODY_POINTS, height * SIMCC_SPLIT_RATIO])
    )
    if not valid:
        raise ValueError(
            f"{POSE_MODEL_FILE}: {path} is not the DWPose whole-body model (expected one input [1, 3, 384, 288] "
            f"and outputs SimCC x [1, 133, 576], SimCC y [1, 133, 768]; got inputs {_describe(inputs)}, "
            f"outputs {_describe(outputs)}); replace it with {POSE_MODEL_FILE} from {MODEL_SOURCE}"
        )
    return width, height


def as_frame_batch(frames):
    """Check ComfyUI frames [B, H, W, 3] (torch or numpy, or a list of [H, W, 3] images of one size)."""
    if isinstance(frames, (list, tuple)):
        sizes = sorted({tuple(f.shape) for f in frames})
        if len(sizes) > 1:
            raise ValueError(
                f"frames: images have different sizes {sizes}; resize them to one size before pose extraction"
            )
        frames = torch.stack([torch.as_tensor(f) for f in frames]) if frames else np.zeros((0, 1, 1, 3))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames: expected an IMAGE batch [B, H, W, 3] of RGB floats in 0..1, got {list(frames.shape)}"
        )
    if frames.shape[0] == 0:
        raise ValueError("frames: zero frames; pass at least one image")
    return frames


def frames_to_uint8(frames) -> np.ndarray:
    """Float 0..1 RGB frames (torch or numpy) -> uint8, truncating x * 255 as the reference packs do."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().float().numpy()
    return np.clip(np.asarray(frames) * 255.0, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Extraction:
    """Poses of every frame, the frames where nobody was detected (before any gap filling), and the
    onnxruntime execution provider that ran."""

    poses: PoseSequence
    missing_frames: list[int]
    provider: str


class DWPoseExtractor:
    """YOLOX + DWPose on onnxruntime, models found by file name in ``model_dirs`` (searched recursively).

    Asks for CUDA only where it can work (``choose_providers``), reports the provider the sessions really run
    on (session.get_providers()) and logs it in one line, with the reason when it is the CPU.
    """

    def __init__(self, model_dirs: Sequence[str | Path]):
        onnxruntime = _import_onnxruntime()
        detector_path = find_model_file(DETECTOR_FILE, model_dirs)
        pose_path = find_model_file(POSE_MODEL_FILE, model_dirs)
        providers, cpu_reason = choose_providers(onnxruntime.get_available_providers(), _cuda_gpu())
        self.detector = _open_session(onnxruntime, detector_path, providers)
        _check_detector(self.detector, detector_path)
        self.pose_model = _open_session(onnxruntime, pose_path, providers)
        self.pose_input_size = _check_pose_model(self.pose_model, pose_path)
        self._detector_input = self.detector.get_inputs()[0].name
        self._pose_input = self.pose_model.get_inputs()[0].name
        detector_provider = self.detector.get_providers()[0]
        pose_provider = self.pose_model.get_providers()[0]
        if detector_provider == pose_provider:
            self.provider = pose_provider
        else:
            self.provider = f"detector on {detector_provider}, pose model on {pose_provider}"
        if cpu_reason is None and "CUDA" not in self.provider:
            cpu_reason = ("CUDA was asked for but onnxruntime could not use it (see its messages above; often a CUDA "
                          "or cuDNN version this onnxruntime-gpu was not built for)")
        reason = f", because {cpu_reason}" if cpu_reason and self.provider == "CPUExecutionProvider" else ""
        logger.info("DWPose runs on %s%s (%s, %s)", self.provider, reason, detector_path, pose_path)

    def detect_people(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes [n, 4] and scores [n] in one uint8 RGB frame [H, W, 3]."""
        image, ratio = letterbox(frame)
        (prediction,) = self.detector.run(None, {self._detector_input: image[None]})
        return decode_person_boxes(prediction[0], ratio)

    def estimate_pose(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 134-point OpenPose-ordered pose (points [134, 2], scores [134]) of the person in ``box``."""
        crop, centre, scale = pose_crop(frame, box, self.pose_input_size)
        simcc_x, simcc_y = self.pose_model.run(None, {self._pose_input: crop[None]})
        points, scores = decode_simcc(simcc_x[0], simcc_y[0], centre, scale, self.pose_input_size)
        return wholebody_to_openpose(points, scores)

    def extract(self, frames, callback: Callable[[int, int], None] | None = None, fill_gaps: bool = False,
                batch_size: int = 16) -> Extraction:
        """Poses of a frame batch [B, H, W, 3] float 0..1 RGB (torch or numpy).

        Frames are converted ``batch_size`` at a time; after each frame ``callback(done, total)`` is
        called (an exception raised there cancels the extraction).
        A frame with nobody in it (no box, or no keypoint above the visibility score) is listed in
        ``missing_frames``; with ``fill_gaps`` its pose is interpolated from the neighbouring frames,
        otherwise it stays empty.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        frames = as_frame_batch(frames)
        total, height, width = frames.shape[:3]
        points = np.zeros((total, NUM_POINTS, 2))
        scores = np.zeros((total, NUM_POINTS))
        for start in range(0, total, batch_size):
            for offset, frame in enumerate(frames_to_uint8(frames[start : start + batch_size])):
                boxes, _ = self.detect_people(frame)
                people = [self.estimate_pose(frame, box) for box in boxes]
                if people:
                    best = max(people, key=lambda person: person[1][person[1] >= VISIBLE_SCORE].sum())
                    points[start + offset], scores[start + offset] = best
                if callback is not None:
                    callback(start + offset + 1, total)
        poses = PoseSequence(points, scores, canvas_width=width, canvas_height=height)
        missing = poses.empty_frames
        if fill_gaps and missing:
            poses = interpolate_empty_frames(poses)
        return Extraction(poses=poses, missing_frames=missing, provider=self.provider)
