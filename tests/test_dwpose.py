"""DWPose extractor: pre/post-processing on tiny ONNX graphs with the real models' input/output names
and shapes (yolox_l.onnx: images [1,3,640,640] -> [1,8400,85]; dw-ll_ucoco_384.onnx: input
[1,3,384,288] -> simcc_x [1,133,576], simcc_y [1,133,768])."""
import logging
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from posecrafter import dwpose
from posecrafter.dwpose import (
    DWPoseExtractor,
    decode_person_boxes,
    decode_simcc,
    find_model_file,
    letterbox,
    non_maximum_suppression,
    pose_crop,
    wholebody_to_openpose,
)
from posecrafter.pose import FACE, FEET, LEFT_HAND, RIGHT_HAND
from tests.comfy_pack import ROOT

FRAME_W, FRAME_H = 320, 240  # letterbox ratio r = 2
PERSON_BOX = (100.0, 40.0, 180.0, 200.0)  # frame pixels
PERSON_ROW = 8000 + 7 * 20 + 8  # stride-32 anchor at grid cell (8, 7)
# The box's pose crop: centre (140, 120), size 1.25 * (80, 160) widened to 3:4 -> (150, 200), so a
# crop pixel c maps to frame pixel c * 150/288 + (65, 20); crop pixel 48 * (a, b) -> (65 + 25a, 20 + 25b).
SIMCC_PEAKS = {  # raw COCO-WholeBody index -> (a, b)
    0: (3, 1), 1: (4, 1), 2: (2, 1), 5: (5, 3), 6: (1, 3), 17: (2, 7), 23: (3, 2), 91: (5, 5), 112: (0, 5),
}


def yolox_row(box_in_frame, ratio, cell, stride, objectness, class_scores):
    x0, y0, x1, y1 = np.array(box_in_frame) * ratio
    row = np.zeros(85, np.float32)
    row[0] = (x0 + x1) / 2 / stride - cell[0]
    row[1] = (y0 + y1) / 2 / stride - cell[1]
    row[2] = np.log((x1 - x0) / stride)
    row[3] = np.log((y1 - y0) / stride)
    row[4] = objectness
    for cls, score in class_scores.items():
        row[5 + cls] = score
    return row


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_detector(path, input_name="images"):
    """A stand-in YOLOX: the person row's objectness is scaled by how bright the frame is, so a black
    frame (its letterbox maximum is the 114 padding) has nobody in it."""
    boxes = np.zeros((1, 8400, 85), np.float32)
    boxes[0, PERSON_ROW] = yolox_row(PERSON_BOX, 2.0, (8, 7), 32, 0.0, {0: 0.8})
    objectness = np.zeros((1, 8400, 85), np.float32)
    objectness[0, PERSON_ROW, 4] = 0.9
    nodes = [
        helper.make_node("ReduceMax", [input_name], ["brightest"], keepdims=0),
        helper.make_node("Sub", ["brightest", "fill"], ["above_fill"]),
        helper.make_node("Div", ["above_fill", "range"], ["ratio"]),
        helper.make_node("Clip", ["ratio", "zero", "one"], ["presence"]),
        helper.make_node("Mul", ["objectness", "presence"], ["scaled"]),
        helper.make_node("Add", ["boxes", "scaled"], ["output"]),
    ]
    constants = {"fill": 114.0, "range": 141.0, "zero": 0.0, "one": 1.0}
    initializers = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in constants.items()]
    initializers += [numpy_helper.from_array(boxes, "boxes"), numpy_helper.from_array(objectness, "objectness")]
    graph = helper.make_graph(
        nodes, "tiny_yolox",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])],
        initializers,
    )
    save(graph, path)


def build_pose_model(path, input_name="input", input_shape=(1, 3, 384, 288), output_names=("simcc_x", "simcc_y")):
    """A stand-in DWPose whose SimCC outputs peak at known bins (0.9 in x, 0.8 in y) for SIMCC_PEAKS."""
    simcc_x = np.zeros((1, 133, 576), np.float32)
    simcc_y = np.zeros((1, 133, 768), np.float32)
    for index, (a, b) in SIMCC_PEAKS.items():
        simcc_x[0, index, 96 * a] = 0.9
        simcc_y[0, index, 96 * b] = 0.8
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x_bins"], [output_names[0]]),
         helper.make_node("Identity", ["y_bins"], [output_names[1]])],
        "tiny_dwpose",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output_names[0], TensorProto.FLOAT, [1, 133, 576]),
         helper.make_tensor_value_info(output_names[1], TensorProto.FLOAT, [1, 133, 768])],
        [numpy_helper.from_array(simcc_x, "x_bins"), numpy_helper.from_array(simcc_y, "y_bins")],
    )
    save(graph, path)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Detector in a ComfyUI-style models/dwpose folder, pose model where comfyui_controlnet_aux keeps it."""
    root = tmp_path_factory.mktemp("models")
    (root / "dwpose").mkdir()
    aux = root / "ckpts" / "yzd-v" / "DWPose"
    aux.mkdir(parents=True)
    build_detector(root / "dwpose" / "yolox_l.onnx")
    build_pose_model(aux / "dw-ll_ucoco_384.onnx")
    return [root / "missing", root / "dwpose", root / "ckpts"]


@pytest.fixture(scope="module")
def extractor(model_dirs):
    return DWPoseExtractor(model_dirs)


def expected_frame_point(raw_index):
    a, b = SIMCC_PEAKS[raw_index]
    return np.array([65 + 25 * a, 20 + 25 * b], float)


def test_letterbox_pastes_the_resized_rgb_frame_top_left_on_114():
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 20, 30
    image, ratio = letterbox(frame)
    assert ratio == 2.0 and image.shape == (3, 640, 640) and image.dtype == np.float32
    np.testing.assert_array_equal(image[:, 479, 639], [10, 20, 30])  # RGB order kept, no mean/std
    assert (image[:, 480:] == 114).all()
    portrait, ratio = letterbox(np.full((320, 200, 3), 7, np.uint8))
    assert ratio == 2.0 and (portrait[:, :, 400:] == 114).all() and (portrait[:, :, :400] == 7).all()


def test_detections_decode_to_frame_pixels_with_class_aware_nms():
    rows = np.zeros((8400, 85), np.float32)
    rows[PERSON_ROW] = yolox_row(PERSON_BOX, 2.0, (8, 7), 32, 0.9, {0: 0.8})  # 0.72
    rows[PERSON_ROW + 1] = yolox_row(PERSON_BOX, 2.0, (9, 7), 32, 0.9, {0: 0.6})  # same box, 0.54: suppressed
    rows[10] = yolox_row((5, 5, 25, 45), 2.0, (10, 0), 8, 0.8, {0: 0.5})  # another person, 0.4
    rows[20] = yolox_row((200, 20, 300, 200), 2.0, (20, 0), 8, 0.5, {0: 0.4})  # 0.2: below 0.3
    rows[PERSON_ROW + 2] = yolox_row(PERSON_BOX, 2.0, (10, 7), 32, 1.0, {2: 0.95})  # a car on the person
    boxes, scores = decode_person_boxes(rows, ratio=2.0)
    np.testing.assert_allclose(boxes, [PERSON_BOX, (5, 5, 25, 45)], atol=1e-3)
    np.testing.assert_allclose(scores, [0.72, 0.4], atol=1e-6)


def test_nms_uses_the_plus_one_area_convention():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 4]], float)
    # IoU with +1 areas: 50 / 100 = 0.5 > 0.45 -> suppressed (without +1 it would be 36 / 81 = 0.44)
    assert non_maximum_suppression(boxes, np.array([0.9, 0.8])) == [0]


def test_pose_crop_and_simcc_decoding_invert_each_other():
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    frame[90, 150] = 255  # a dot inside the person box
    crop, centre, scale = pose_crop(frame, np.array(PERSON_BOX), (288, 384))
    assert crop.shape == (3, 384, 288)
    np.testing.assert_allclose(centre, [140, 120])
    np.testing.assert_allclose(scale, [150, 200])  # 1.25 x (80, 160), widened to 3:4
    cy, cx = np.unravel_index(crop[0].argmax(), crop[0].shape)
    simcc_x, simcc_y = np.zeros((1, 576)), np.zeros((1, 768))
    simcc_x[0, 2 * cx], simcc_y[0, 2 * cy] = 1.0, 1.0
    points, scores = decode_simcc(simcc_x, simcc_y, centre, scale, (288, 384))
    np.testing.assert_allclose(points[0], [150, 90], atol=150 / 288)  # within one crop pixel
    # the ImageNet normalisation in RGB order, black outside the frame
    corner, _, _ = pose_crop(frame, np.array([0.0, 0.0, 40.0, 80.0]), (288, 384))
    np.testing.assert_allclose(corner[:, 0, 0], -np.array([123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375],
                               rtol=1e-6)


def test_simcc_score_is_the_smaller_maximum_and_split_ratio_is_2():
    simcc_x, simcc_y = np.zeros((2, 576)), np.zeros((2, 768))
    simcc_x[0, 100], simcc_y[0, 300] = 0.7, 0.4
    points, scores = decode_simcc(simcc_x, simcc_y, np.array([144.0, 192.0]), np.array([288.0, 384.0]), (288, 384))
    np.testing.assert_allclose(points[0], [50, 150])  # identity crop: bin / 2
    np.testing.assert_allclose(scores, [0.4, 0.0])
    np.testing.assert_allclose(points[1], [-1, -1])  # no positive maximum: location -1


def test_133_keypoints_map_to_openpose_order_with_a_synthesised_neck():
    raw = np.stack([np.arange(133.0), 1000 + np.arange(133.0)], axis=1)
    points, scores = wholebody_to_openpose(raw, np.full(133, 0.9))
    # OpenPose body index -> COCO-WholeBody index (spec 7.1)
    openpose_from_coco = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13,
                          13: 15, 14: 2, 15: 1, 16: 4, 17: 3}
    for openpose, coco in openpose_from_coco.items():
        np.testing.assert_array_equal(points[openpose], raw[coco], err_msg=f"OpenPose point {openpose}")
    np.testing.assert_array_equal(points[1], (raw[5] + raw[6]) / 2)
    assert scores[1] == 1.0
    np.testing.assert_array_equal(points[FEET], raw[17:23])
    np.testing.assert_array_equal(points[FACE], raw[23:91])
    np.testing.assert_array_equal(points[LEFT_HAND], raw[91:112])
    np.testing.assert_array_equal(points[RIGHT_HAND], raw[112:133])


@pytest.mark.parametrize("shoulders, neck", [((0.9, 0.9), 1.0), ((0.31, 0.31), 1.0), ((0.3, 0.9), 0.0),
                                             ((0.9, 0.1), 0.0)])
def test_neck_is_visible_only_if_both_shoulders_score_above_0_3(shoulders, neck):
    scores = np.full(133, 0.9)
    scores[5], scores[6] = shoulders
    assert wholebody_to_openpose(np.zeros((133, 2)), scores)[1][1] == neck


def test_extraction_maps_simcc_peaks_back_to_the_original_frame(extractor):
    frames = torch.ones(2, FRAME_H, FRAME_W, 3)
    result = extractor.extract(frames)
    assert result.missing_frames == []
    poses = result.poses
    assert (poses.canvas_width, poses.canvas_height) == (FRAME_W, FRAME_H)
    for openpose, raw in {0: 0, 15: 1, 14: 2, 5: 5, 2: 6, 18: 17, 24: 23, 92: 91, 113: 112}.items():
        np.testing.assert_allclose(poses.points[1, openpose], expected_frame_point(raw), atol=1e-4)  # float32 box
        assert poses.scores[1, openpose] == pytest.approx(0.8)
    np.testing.assert_allclose(poses.points[0, 1], (expected_frame_point(5) + expected_frame_point(6)) / 2, atol=1e-4)
    assert poses.visible[0].sum() == 10  # the 9 peaks and the neck


def test_graphs_are_run_by_their_own_input_and_output_names(extractor, tmp_path):
    """Exports name their tensors differently; inputs are taken from the graph and outputs by order (x, y)."""
    build_detector(tmp_path / "yolox_l.onnx", input_name="data")
    build_pose_model(tmp_path / "dw-ll_ucoco_384.onnx", input_name="image", output_names=("output", "1234"))
    frames = torch.ones(2, FRAME_H, FRAME_W, 3)
    renamed = DWPoseExtractor([tmp_path]).extract(frames).poses
    expected = extractor.extract(frames).poses
    np.testing.assert_array_equal(renamed.points, expected.points)
    np.testing.assert_array_equal(renamed.scores, expected.scores)


def test_numpy_frames_and_frames_without_anybody(extractor):
    frames = np.ones((4, FRAME_H, FRAME_W, 3), np.float32)
    frames[[0, 2]] = 0.0  # black: the stand-in detector finds nobody
    result = extractor.extract(frames)
    assert result.missing_frames == [0, 2]
    assert result.poses.empty_frames == [0, 2]
    filled = extractor.extract(frames, fill_gaps=True)
    assert filled.missing_frames == [0, 2] and filled.poses.empty_frames == []
    np.testing.assert_allclose(filled.poses.points[2], filled.poses.points[1])


def test_progress_callback_per_frame_and_cancel(extractor):
    """One call per frame, also inside a conversion batch (a node's progress bar moves frame by frame)."""
    calls = []
    extractor.extract(torch.ones(5, FRAME_H, FRAME_W, 3), callback=lambda done, total: calls.append((done, total)),
                      batch_size=2)
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        calls.append(done)
        raise Cancelled

    calls.clear()
    with pytest.raises(Cancelled):
        extractor.extract(torch.ones(5, FRAME_H, FRAME_W, 3), callback=cancel, batch_size=2)
    assert calls == [1]


def test_bad_frames_are_clear_errors(extractor):
    with pytest.raises(ValueError, match="frames: images have different sizes"):
        extractor.extract([np.ones((8, 8, 3)), np.ones((8, 9, 3))])
    with pytest.raises(ValueError, match="frames: zero frames"):
        extractor.extract(torch.ones(0, 8, 8, 3))
    with pytest.raises(ValueError, match="frames: expected an IMAGE batch"):
        extractor.extract(torch.ones(2, 8, 8))


@pytest.mark.parametrize("available, cuda_gpu, providers, reason", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], True, ["CUDAExecutionProvider", "CPUExecutionProvider"], None),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], False, ["CPUExecutionProvider"],
     "onnxruntime-gpu is installed but PyTorch sees no CUDA GPU"),
    (["CPUExecutionProvider"], True, ["CPUExecutionProvider"], "the installed onnxruntime has no CUDA provider; install "
     "onnxruntime-gpu"),
    (["AzureExecutionProvider", "CPUExecutionProvider"], False, ["CPUExecutionProvider"], "there is no CUDA GPU"),
])
def test_cuda_is_asked_for_only_where_it_can_work(available, cuda_gpu, providers, reason):
    chosen, why = dwpose.choose_providers(available, cuda_gpu)
    assert chosen == providers
    assert why == reason if reason is None else why.startswith(reason)


def test_reported_provider_is_the_one_that_ran(model_dirs, monkeypatch, caplog):
    # onnxruntime-gpu on a machine without a CUDA GPU (this one): CUDA is not even asked for, one line says why
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    asked = []
    real_session = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession",
                        lambda path, providers: asked.append(providers) or real_session(path, providers=providers))
    with caplog.at_level(logging.INFO, logger="posecrafter.dwpose"):
        extractor = DWPoseExtractor(model_dirs)
    assert asked == [["CPUExecutionProvider"]] * 2
    assert extractor.provider == extractor.pose_model.get_providers()[0] == "CPUExecutionProvider"
    assert extractor.extract(torch.ones(1, FRAME_H, FRAME_W, 3)).provider == "CPUExecutionProvider"
    lines = [r.getMessage() for r in caplog.records if r.name == "posecrafter.dwpose"]
    assert len(lines) == 1
    assert lines[0].startswith("DWPose runs on CPUExecutionProvider, because onnxruntime-gpu is installed but PyTorch "
                               "sees no CUDA GPU (")


def test_models_are_found_recursively_and_missing_ones_named(model_dirs, tmp_path):
    assert find_model_file("dw-ll_ucoco_384.onnx", model_dirs).parts[-3:] == ("yzd-v", "DWPose",
                                                                              "dw-ll_ucoco_384.onnx")
    with pytest.raises(ValueError, match="model_dirs: yolox_l.onnx was not found in .*huggingface.co/yzd-v/DWPose"):
        DWPoseExtractor([tmp_path])


def test_a_wrong_graph_is_rejected(model_dirs, tmp_path):
    build_pose_model(tmp_path / "yolox_l.onnx")  # the pose graph under the detector's name
    with pytest.raises(ValueError, match="yolox_l.onnx: .* is not the YOLOX-L detector"):
        DWPoseExtractor([tmp_path] + model_dirs)
    wrong = tmp_path / "wrong_input"
    wrong.mkdir()
    build_pose_model(wrong / "dw-ll_ucoco_384.onnx", input_shape=(1, 3, 256, 192))  # SimCC bins need 384x288
    with pytest.raises(ValueError, match="dw-ll_ucoco_384.onnx: .* is not the DWPose whole-body model"):
        DWPoseExtractor([wrong] + model_dirs)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "yolox_l.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        DWPoseExtractor([garbage] + model_dirs)


def test_missing_onnxruntime_says_what_to_install(model_dirs, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="onnxruntime-gpu"):
        dwpose.DWPoseExtractor(model_dirs)


def test_both_onnxruntime_builds_get_one_warning_when_the_pack_loads(tmp_path):
    """onnxruntime-gpu's pip metadata beside this machine's onnxruntime (as a second `pip install` leaves them):
    loading the pack as ComfyUI does logs one warning naming the build Python imports and the pip commands
    that keep one. With onnxruntime alone (this machine), nothing."""
    assert dwpose.onnxruntime_conflict() is None
    info = tmp_path / "site" / "onnxruntime_gpu-1.20.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.1\n")
    path = os.pathsep.join(filter(None, [str(info.parent), str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", "from tests.comfy_pack import load_pack; load_pack()"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "both onnxruntime and onnxruntime-gpu" in line]
    assert warning.startswith("PoseCrafter: both onnxruntime and onnxruntime-gpu are installed.")
    assert "it imports the CPU-only build of onnxruntime" in warning
    assert ("python -m pip uninstall -y onnxruntime onnxruntime-gpu, then python -m pip install onnxruntime-gpu (NVIDIA GPU)"
            " or python -m pip install onnxruntime (CPU only)") in warning
