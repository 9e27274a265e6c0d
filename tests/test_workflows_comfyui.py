"""The bundled workflows in a real ComfyUI: start its main.py --cpu on 127.0.0.1 with this pack as its only
custom node, check what /object_info says about our nodes and the core nodes the workflows use, that
missing model files are refused at validation with their folder named, and run the API twins of
workflows (a)-(d) and the evaluation workflow through POST /prompt.

Runs only when COMFYUI_PATH points at a ComfyUI checkout (0.8.0 or newer; 0.8.0 and 0.33.0 are tested). Nothing else is needed:
the test writes everything into a temporary folder that it passes as ComfyUI's --base-directory
(models, input, output, custom_nodes, user), so neither the checkout nor your models are touched:
- full-size SD1.5 files with random weights (tests/sd15_random.py: checkpoint, OpenPose ControlNet,
  VAE; about 3 GB, written in seconds and deleted at the end), named as the workflows name them;
- the DWPose stand-in ONNX graphs of tests/test_dwpose.py (they find one person in bright frames);
- a CLIP ViT-L/14 vision file with random weights (about 0.6 GB), for the evaluation workflow's CLIP-I/T;
- two 64x64 videos of bright noise (4 training frames, 3 driving frames).
The workflows run at 64x64 with 2 tuning, inversion and sampling steps (about 2 minutes on 2 CPU cores), and the
last test checks the peak memory of ComfyUI and pytest together (at most 10 GB).

    COMFYUI_PATH=/path/to/ComfyUI python3 -m pytest -q tests/test_workflows_comfyui.py

ComfyUI runs under COMFYUI_PYTHON (default: the Python running pytest), which needs ComfyUI's
requirements and this pack's; with ComfyUI in its own virtual environment:

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python3 -m pytest -q tests/test_workflows_comfyui.py

ComfyUI's log is kept in the test's temporary folder (comfyui.log) and shown when something fails.
"""
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.comfy_pack import ROOT, load_api_script

COMFYUI = os.environ.get("COMFYUI_PATH")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
SIZE = 64
TRAINING_FRAMES, DRIVING_FRAMES, FPS = 4, 3, 8
EVALUATION_SPLIT = 2  # the evaluation workflow tunes on the training video's first 2 frames and generates the rest
API = ROOT / "workflows" / "api"
# ComfyUI's own options for every server the tests start. --bf16-unet: CheckpointLoaderSimple's UNet (the
# workflows use its CLIP and VAE; the pack samples with its own UNet) is kept in bf16, not in fp32 as on a CPU.
SERVER_OPTIONS = ["--cpu", "--bf16-unet", "--database-url", "sqlite:///:memory:"]
MAX_MEMORY_GB = 10  # peak resident memory of the ComfyUI server and of this pytest process together
SCRIPT_SERVER_PEAK_GB = []  # what run_api_workflow.py printed for the 64 px server it started
# The small world (benchmarks/world): its trained weights, installed by its install.py (another folder of weights
# in the same layout can be named, e.g. untrained ones to check the plumbing).
WORLD_WEIGHTS = Path(os.environ.get("POSECRAFTER_WORLD_WEIGHTS") or ROOT / "benchmarks" / "world" / "weights")
# The engine-level CI test's expectations for the 'full' row of case 1 (tests/test_world_outcome.py: pose 0.707,
# identity colour error 33.5, background 22.2 dB), less a margin for ComfyUI's fp16 text encoder and the H.264 that
# Save Video writes.
WORLD_MIN_POSE = 0.707 - 0.03
WORLD_MAX_IDENTITY = 33.5 + 5
WORLD_MIN_BACKGROUND_DB = 22.2 - 1
# How far ComfyUI's path may land from the pack's engine path with the same weights, as the mean absolute
# difference of the videos, of 255: measured 2.92 with the retrained weights on 0.33.0 and 0.8.0 (2.81 with the
# first trained weights on 0.28.0, 1.58 with untrained ones).
WORLD_ENGINE_DIFFERENCE = 4.0
WORLD_TEXT_TOLERANCE = 0.02  # max abs difference of the embeddings: 3.4e-3 measured on 0.28.0 (fp16 weights)

pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run this test")


def write_video(path, frames, seed):
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(180, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    writer.release()


def model_file_names():
    """The file each loader of workflow (a) names, by ComfyUI model folder."""
    prompt = json.loads((API / "posecrafter_one_shot.json").read_text())
    names = {}
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            names["checkpoints"] = inputs["ckpt_name"]
        elif node["class_type"] == "VAELoader":
            names["vae"] = inputs["vae_name"]
        elif node["class_type"] == "PoseCrafterModelLoader":
            assert inputs["checkpoint"] == names.get("checkpoints", inputs["checkpoint"])
            names["checkpoints"], names["controlnet"] = inputs["checkpoint"], inputs["controlnet"]
    return names


def write_models(models):
    """Write the model files in a child process, so the state dicts it builds (2-3 GB) do not stay in the
    memory of this pytest process while ComfyUI runs."""
    code = "import sys, pathlib, tests.test_workflows_comfyui as t; t.write_models_here(pathlib.Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(models)], cwd=ROOT, check=True)


def write_models_here(models):
    from tests.sd15_random import write_clip_vision_file, write_sd15_files
    from tests.test_dwpose import build_detector, build_pose_model

    names = model_file_names()
    for folder in ("checkpoints", "controlnet", "vae", "dwpose", "clip_vision"):
        (models / folder).mkdir(parents=True)
    write_sd15_files(
        models / "checkpoints" / names["checkpoints"],
        models / "controlnet" / names["controlnet"],
        models / "vae" / names["vae"],
    )
    build_detector(models / "dwpose" / "yolox_l.onnx")
    build_pose_model(models / "dwpose" / "dw-ll_ucoco_384.onnx")
    evaluate = json.loads((API / "posecrafter_evaluate.json").read_text())
    (clip_name,) = [n["inputs"]["clip_name"] for n in evaluate.values() if n["class_type"] == "CLIPVisionLoader"]
    write_clip_vision_file(models / "clip_vision" / clip_name)


def small_prompt(name):
    """An API twin at 64x64 with 2 steps everywhere (and windows that fit 3 driving frames). To fit in
    MAX_MEMORY_GB, the pack's model is loaded in bf16 and tuned with the "clean" rule: fp32 weights plus the
    "paper" rule's fp32 gradient buffer for every frozen weight would take about 10 GB on their own. Both rules
    and every precision are tested on tiny models by the pack's own suite."""
    prompt = json.loads((API / f"{name}.json").read_text())
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "PoseCrafterModelLoader":
            inputs["dtype"] = "bf16"
        elif node["class_type"] == "PoseCrafterOneShotTuner":
            inputs["update_rule"] = "clean"
        if node["class_type"] == "ImageScale":
            inputs.update(width=SIZE, height=SIZE)
        elif node["class_type"] in ("PoseCrafterOneShotTuner", "PoseCrafterDDIMInverter", "PoseCrafterTemporalSampler"):
            inputs["steps"] = 2
        elif node["class_type"] == "PoseCrafterSelectFrames":
            inputs["frames"] = 2  # frames 0 and 2 of the 4; in the evaluation workflow the whole training part
        elif node["class_type"] == "ImageFromBatch" and inputs["batch_index"] == 0:  # the evaluation workflow's
            inputs["length"] = EVALUATION_SPLIT  # training part: frames 0-1
        elif node["class_type"] == "ImageFromBatch":
            inputs["batch_index"] = EVALUATION_SPLIT  # evaluation part: frames 2-3
        if node["class_type"] == "PoseCrafterTemporalSampler" and inputs["context_length"]:
            inputs.update(context_length=3, context_overlap=1)
    return prompt


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_video(path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    rate, frames = capture.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, rate


def check_object_info(info):
    """Our nodes exactly as tests/test_workflows.py has them; core nodes by what the workflows use of them.

    Core nodes change between ComfyUI versions (0.33 added GetVideoComponents' bit_depth output, CreateVideo's
    optional bit_depth input, outputs of SaveVideo/PreviewImage/PreviewAny). What the workflows rely on must hold:
    every input they use, with its type and requiredness, in the same order (widget values are stored by
    position), any other input optional and after them, and their output slots first, in order."""
    from tests.test_workflows import CORE_NODES, pack_signatures

    pack = pack_signatures()
    for name, sig in {**CORE_NODES, **pack}.items():
        assert name in info, f"ComfyUI has no node {name}"
        served = info[name]
        declared = {**served["input"].get("required", {}), **served["input"].get("optional", {})}
        order = served.get("input_order", {})
        names = order.get("required", []) + order.get("optional", []) if order else list(declared)
        used = [i[0] for i in sig["inputs"]]
        outputs = list(zip(served["output_name"], served["output"]))
        if name in pack:
            assert names == used, f"{name}: inputs {names}"
            assert outputs == sig["outputs"], f"{name}: outputs {outputs}"
        else:
            assert [n for n in names if n in used] == used, f"{name}: inputs {names}, the workflows use {used}"
            extra = [n for n in names if n not in used]
            assert all(n in served["input"].get("optional", {}) for n in extra), f"{name}: new required {extra}"
            assert not extra or names.index(extra[0]) > max(names.index(n) for n in used), f"{name}: {names}"
            assert outputs[:len(sig["outputs"])] == sig["outputs"], f"{name}: outputs {outputs}"
        for input_name, kind, _, required in sig["inputs"]:
            served_kind = declared[input_name][0]
            # 0.33 serves some combos as dynamic combos (SaveVideo's codec): options {"key": value, "inputs": ...}
            served_kind = "COMBO" if isinstance(served_kind, list) or served_kind == "COMFY_DYNAMICCOMBO_V3" else served_kind
            if isinstance(kind, list):
                options = declared[input_name][0]
                options = options if isinstance(options, list) else declared[input_name][1].get("options")
                options = [o["key"] if isinstance(o, dict) else o for o in options]
                assert options == kind, f"{name}.{input_name}: {options}"
            else:
                assert served_kind == kind, f"{name}.{input_name}: {served_kind} vs {kind}"
            assert (input_name in served["input"].get("required", {})) == required, f"{name}.{input_name}"


def comfyui_folders(base):
    """ComfyUI's folders in ``base`` (for --base-directory), with this pack as its only custom node."""
    for folder in ("input", "output", "custom_nodes", "user"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "comfyui-posecrafter").symlink_to(ROOT, target_is_directory=True)
    return base


@contextlib.contextmanager
def running_comfyui(base):
    """A ComfyUI server on ``base``: yields (server URL, /object_info, its log's path, its process)."""
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    log_path = base / "comfyui.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [PYTHON, "main.py", *SERVER_OPTIONS, "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base), "--preview-method", "latent2rgb"],  # the sampler's previews run too
        cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT,
    )

    def tail():
        return log_path.read_text(errors="replace")[-6000:]

    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                info = json.loads(urllib.request.urlopen(f"{server}/object_info", timeout=10).read())
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("ComfyUI did not start:\n" + tail())
                time.sleep(1)
        yield server, info, log_path, process
    finally:
        load_api_script().stop(process)
        log.close()


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    base = comfyui_folders(tmp_path_factory.mktemp("comfyui_base"))
    write_models(base / "models")
    write_video(base / "input" / "training.mp4", TRAINING_FRAMES, seed=0)
    write_video(base / "input" / "driving.mp4", DRIVING_FRAMES, seed=1)
    try:
        with running_comfyui(base) as (server, info, log_path, process):
            yield server, info, base, log_path, process
    finally:
        shutil.rmtree(base / "models", ignore_errors=True)  # the 3 GB of random weights


def test_script_starts_comfyui_makes_the_video_and_stops_it(tmp_path, capsys):
    """The newcomer's command: with no server running, run_api_workflow.py --comfyui starts this ComfyUI
    itself, runs the one-shot workflow (at 64x64, 2 steps, through --set) and leaves no server behind.
    Defined before the tests that use the module's own server, so that one is not running yet."""
    base = comfyui_folders(tmp_path / "base")
    training, driving = tmp_path / "me.mp4", tmp_path / "moves.mp4"
    write_video(training, TRAINING_FRAMES, seed=0)
    write_video(driving, DRIVING_FRAMES, seed=1)
    original, small = json.loads((API / "posecrafter_one_shot.json").read_text()), small_prompt("posecrafter_one_shot")
    settings = [f"{i}.{name}={json.dumps(value)}" for i, node in small.items() for name, value in node["inputs"].items()
                if original[i]["inputs"][name] != value]
    server, out = f"http://127.0.0.1:{free_port()}", tmp_path / "out"
    try:
        write_models(base / "models")
        code = load_api_script().main([
            str(API / "posecrafter_one_shot.json"), "--comfyui", COMFYUI, "--python", PYTHON, "--server", server,
            "--training-video", str(training), "--driving-video", str(driving), "--out", str(out),
            *[arg for setting in settings for arg in ("--set", setting)],
            "--", *SERVER_OPTIONS, "--base-directory", str(base),
        ])
    finally:
        shutil.rmtree(base / "models", ignore_errors=True)
    log = (out / "comfyui.log").read_text(errors="replace")[-6000:] if (out / "comfyui.log").exists() else ""
    assert code == 0, log
    peak = re.search(r"^peak memory of the ComfyUI this script started: ([\d.]+) GiB$", capsys.readouterr().out,
                     re.MULTILINE)
    if peak:  # read from /proc (Linux); the memory test adds it up
        SCRIPT_SERVER_PEAK_GB.append(float(peak.group(1)))
    (video,) = out.glob("*.mp4")
    frames, rate = read_video(video)
    assert len(frames) == DRIVING_FRAMES and frames[0].shape == (SIZE, SIZE, 3) and rate == FPS
    assert (base / "output" / "posecrafter" / video.name).is_file()
    assert not load_api_script().answers(server), "the started ComfyUI is still running"


def test_quick_run_makes_a_short_video_and_prints_its_time(tmp_path, capsys):
    """README's --quick command, as a newcomer runs it (no option for ComfyUI but the test's folders): real-size
    SD1.5 files with random weights, the DWPose stand-ins. It makes a video of the first QUICK driving frames at
    QUICK size and prints how long the workflow ran and the peak memory of its ComfyUI (README's figures)."""
    script = load_api_script()
    base = comfyui_folders(tmp_path / "base")
    training, driving = tmp_path / "me.mp4", tmp_path / "moves.mp4"
    write_video(training, script.QUICK["training_frames"], seed=0)
    write_video(driving, script.QUICK["driving_frames"] + 2, seed=1)
    server, out = f"http://127.0.0.1:{free_port()}", tmp_path / "out"
    try:
        write_models(base / "models")
        code = script.main([
            str(API / "posecrafter_one_shot.json"), "--comfyui", COMFYUI, "--python", PYTHON, "--server", server,
            "--training-video", str(training), "--driving-video", str(driving), "--out", str(out), "--quick",
            "--", "--database-url", "sqlite:///:memory:", "--base-directory", str(base),
        ])
    finally:
        shutil.rmtree(base / "models", ignore_errors=True)
    printed = capsys.readouterr().out
    log = (out / "comfyui.log").read_text(errors="replace")[-6000:] if (out / "comfyui.log").exists() else ""
    assert code == 0, printed[-3000:] + log
    assert "a setup check, not a quality setting" in printed
    ran = re.search(r"^the workflow ran in (?:(\d+) min )?(\d+) s$", printed, re.MULTILINE)
    peak = re.search(r"^peak memory of the ComfyUI this script started: ([\d.]+) GiB$", printed, re.MULTILINE)
    assert ran and peak, printed[-3000:]
    seconds = 60 * int(ran.group(1) or 0) + int(ran.group(2))
    with capsys.disabled():
        print(f"\n--quick in ComfyUI: the workflow ran {seconds} s, ComfyUI's peak memory {peak.group(1)} GiB")
    (video,) = out.glob("*.mp4")
    frames, _ = read_video(video)
    size = script.QUICK["size"]
    assert len(frames) == script.QUICK["driving_frames"] and frames[0].shape == (size, size, 3)
    assert not script.answers(server), "the started ComfyUI is still running"


def test_pack_loads_and_object_info_matches(comfyui):
    server, info, base, log_path, _ = comfyui
    log = log_path.read_text(errors="replace")
    loaded = re.search(r"seconds( \(IMPORT FAILED\))?: .*comfyui-posecrafter", log)
    assert loaded and not loaded.group(1), "the pack is not in 'Import times for custom nodes':\n" + log[-6000:]
    assert len([name for name in info if name.startswith("PoseCrafter")]) == 16, log[-6000:]
    check_object_info(info)


def test_pose_files_are_listed_uploaded_loaded_and_saved_in_comfyui(comfyui, tmp_path):
    """Load Poses and Save Poses with ComfyUI's own folders: the picker (/object_info, what the frontend lists)
    shows a pose JSON, a zip uploaded through ComfyUI's upload endpoint and a folder of OpenPose files; Save ->
    Load gives back the same frames; a name outside the input folder is refused when the prompt is queued."""
    from posecrafter.pose import to_pose_keypoint
    from tests.test_pose import random_poses
    from tests.test_pose_files import NAMES, openpose_frames, write_openpose

    server, _, base, log_path, _ = comfyui
    script = load_api_script()
    moves = to_pose_keypoint(random_poses(frames=5, width=SIZE, height=SIZE))
    (base / "input" / "moves.json").write_text(json.dumps(moves))
    write_openpose(base / "input" / "walk", openpose_frames(3, body_points=25), NAMES)
    write_openpose(tmp_path / "run", openpose_frames(4), NAMES)
    shutil.make_archive(str(tmp_path / "run"), "zip", tmp_path / "run")
    uploaded = script.upload(server, tmp_path / "run.zip")
    info = json.loads(urllib.request.urlopen(f"{server}/object_info/PoseCrafterLoadPoses", timeout=30).read())
    listed = info["PoseCrafterLoadPoses"]["input"]["required"]["file"][0]
    assert {"moves.json", "walk", uploaded} <= set(listed), listed

    def prompt(file, width=0, height=0):
        return {
            "1": {"class_type": "PoseCrafterLoadPoses", "inputs": {"file": file, "width": width, "height": height,
                  "skip_first_frames": 0, "select_every_nth": 1, "frame_load_cap": 0}},
            "2": {"class_type": "PoseCrafterSavePoses", "inputs": {"pose": ["1", 0], "filename_prefix": "poses/test"}},
        }

    def load_and_save(file, width=0, height=0):
        try:
            outputs = script.wait(server, script.submit(server, prompt(file, width, height)), timeout=120)
        except SystemExit as failure:
            pytest.fail(f"{file}: {failure}\n--- ComfyUI log ---\n{log_path.read_text(errors='replace')[-6000:]}")
        return json.loads((base / "output" / outputs["2"]["text"][0]).read_text()), outputs["1"]["text"][0]

    assert load_and_save("moves.json")[0] == moves
    walk, report = load_and_save("walk", 640, 480)  # the OpenPose files' frames are 640x480
    assert len(walk) == 3 and report.startswith("walk: 3 of 3 frames, canvas 640x480"), report
    assert len(load_and_save(uploaded, 640, 480)[0]) == 4
    (base.parent / "outside.json").write_text(json.dumps(moves))
    with pytest.raises(SystemExit, match=r"(?s)refused the workflow \(400\).*is not inside ComfyUI's input folder"):
        script.submit(server, prompt("../outside.json"))


def test_missing_models_are_refused_before_anything_runs(comfyui):
    """VALIDATE_INPUTS in a real ComfyUI: a missing file is named with its folder before any node runs.
    ComfyUI answers 400 when no output node is left valid, else 200 with node_errors (the script then
    cancels the partial run)."""
    server, _, base, _, _ = comfyui
    script = load_api_script()
    dwpose, hidden = base / "models" / "dwpose", base / "models" / "dwpose_hidden"
    dwpose.rename(hidden)
    try:
        with pytest.raises(SystemExit, match=r"(?s)refused the workflow \(400\).*images - .*yolox_l.onnx was not found"):
            script.submit(server, small_prompt("posecrafter_one_shot"))
    finally:
        hidden.rename(dwpose)
    prompt = small_prompt("posecrafter_one_shot")
    (loader,) = [i for i, n in prompt.items() if n["class_type"] == "PoseCrafterModelLoader"]
    prompt[loader]["inputs"]["controlnet"] = "missing_openpose.safetensors"
    with pytest.raises(SystemExit, match="ControlNet 'missing_openpose.safetensors' not found in models/controlnet"):
        script.submit(server, prompt)


def test_cfg_without_a_negative_prompt_is_refused_when_queued(comfyui):
    """The Temporal Sampler's VALIDATE_INPUTS (with input_types) refuses cfg > 1 with nothing on 'negative'
    when the prompt is queued: ComfyUI answers 400 and queues nothing, instead of failing after inversion."""
    server, _, _, _, _ = comfyui
    script = load_api_script()
    prompt = small_prompt("posecrafter_attribute_edit")
    (save,) = [i for i, n in prompt.items() if n["class_type"] == "SaveVideo"]
    needed, todo = set(), [save]
    while todo:  # only the video's branch, so no other output node is left to run
        node = todo.pop()
        needed.add(node)
        todo += [v[0] for v in prompt[node]["inputs"].values() if isinstance(v, list) and v[0] not in needed]
    prompt = {i: n for i, n in prompt.items() if i in needed}
    (sampler,) = [i for i, n in prompt.items() if n["class_type"] == "PoseCrafterTemporalSampler"]
    assert prompt[sampler]["inputs"]["cfg"] > 1
    del prompt[sampler]["inputs"]["negative"]
    with pytest.raises(SystemExit, match=r"(?s)refused the workflow \(400\).*cfg > 1 needs a 'negative' conditioning"):
        script.submit(server, prompt)
    queue = json.loads(urllib.request.urlopen(f"{server}/queue", timeout=10).read())
    assert queue["queue_running"] == [] and queue["queue_pending"] == []


def test_workflows_run_in_comfyui(comfyui):
    server, _, base, log_path, _ = comfyui
    script = load_api_script()

    def tail():
        return log_path.read_text(errors="replace")[-6000:]

    def run(name):
        prompt = small_prompt(name)
        try:
            outputs = script.wait(server, script.submit(server, prompt), timeout=900)
        except SystemExit as failure:
            pytest.fail(f"{name}: {failure}\n--- ComfyUI log ---\n{tail()}")
        return prompt, outputs

    # (b) before (a): the tuned weights are not there yet, which validation names with its folder.
    with pytest.raises(SystemExit, match="not found in models/posecrafter"):
        script.submit(server, small_prompt("posecrafter_from_tuned"))

    prompt, outputs = run("posecrafter_one_shot")
    (save_node,) = [i for i, n in prompt.items() if n["class_type"] == "PoseCrafterSaveTuned"]
    tuned = Path(outputs[save_node]["text"][0])
    assert tuned == base / "models" / "posecrafter" / "posecrafter_tuned.safetensors" and tuned.is_file()
    reports = [text for ui in outputs.values() for text in ui.get("text", [])]
    assert any(text.startswith("reference frame ") and "Video-SIM" in text for text in reports), reports
    # the reports as the frontend shows them, in the Preview as Text nodes; 2 training frames were selected
    shown = {n["_meta"]["title"]: outputs[i]["text"][0] for i, n in prompt.items() if n["class_type"] == "PreviewAny"}
    assert shown.keys() == {"Reference frame and Video-SIM", "Latent edits per frame", "Pose retarget report"}, shown
    assert shown["Pose retarget report"].strip(), shown
    (retarget_preview,) = [i for i, n in prompt.items() if n["_meta"]["title"].startswith("Retargeted poses")]
    assert [image["type"] for image in outputs[retarget_preview]["images"]] == ["temp"] * DRIVING_FRAMES, outputs
    reference = shown["Reference frame and Video-SIM"]
    assert reference.startswith("reference frame ") and " of 2 (" in reference, reference
    assert shown["Latent edits per frame"].strip(), shown

    for name in ("posecrafter_one_shot", "posecrafter_from_tuned", "posecrafter_attribute_edit", "posecrafter_long_video"):
        if name != "posecrafter_one_shot":
            prompt, outputs = run(name)
        videos = [item for ui in outputs.values() for item in ui.get("images", []) if item["filename"].endswith(".mp4")]
        assert len(videos) == 1 and videos[0]["subfolder"] == "posecrafter", (name, outputs)
        frames, rate = read_video(base / "output" / "posecrafter" / videos[0]["filename"])
        assert len(frames) == DRIVING_FRAMES and frames[0].shape == (SIZE, SIZE, 3), name
        assert rate == FPS, f"{name}: the output keeps the driving video's frame rate"


def test_evaluate_workflow_runs_in_comfyui(comfyui):
    """The paper's protocol on the training video: tune on its first 2 frames, generate the other 2 from their
    poses, evaluate them against the real ones. CLIP-I/T come from ComfyUI's own CLIP_VISION (encode_image)."""
    server, _, base, log_path, _ = comfyui
    script = load_api_script()
    prompt = small_prompt("posecrafter_evaluate")
    try:
        outputs = script.wait(server, script.submit(server, prompt), timeout=900)
    except SystemExit as failure:
        pytest.fail(f"posecrafter_evaluate: {failure}\n--- ComfyUI log ---\n{log_path.read_text(errors='replace')[-6000:]}")
    shown = {n["_meta"]["title"]: outputs[i]["text"][0] for i, n in prompt.items() if n["class_type"] == "PreviewAny"}
    report = shown["Evaluation report"]
    generated = TRAINING_FRAMES - EVALUATION_SPLIT
    assert report.startswith(f"PoseCrafter evaluation of {generated} frames of {SIZE}x{SIZE}."), report
    for metric in ("MSE-P, pose error", "PSNR (dB", "SSIM (0..1", "CLIP-I (cosine", "CLIP-T (cosine"):
        assert metric in report, report
    assert "Skipped" not in report, report
    clip_i = float(report.split("(identity, clothes, scene): ")[1].split()[0])
    assert -1.0 <= clip_i <= 1.0, report

    (plot_node,) = [i for i, n in prompt.items() if n["_meta"]["title"] == "Evaluation plot"]
    (plot,) = outputs[plot_node]["images"]
    import cv2
    import numpy as np
    from urllib.parse import urlencode

    png = urllib.request.urlopen(f"{server}/view?{urlencode(plot)}", timeout=30).read()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (720, 640, 3) and (image < 128).any(), plot
    videos = [item for ui in outputs.values() for item in ui.get("images", []) if item["filename"].endswith(".mp4")]
    frames, _ = read_video(base / "output" / "posecrafter" / videos[0]["filename"])
    assert len(frames) == generated


def test_peak_memory_of_comfyui_and_pytest(comfyui):
    """Defined last, so every workflow has run: the peak resident memory of each ComfyUI server the tests
    started at 64 px (this module's, and the one the script started and stopped) plus this pytest process's own."""
    *_, process = comfyui
    status = Path(f"/proc/{process.pid}/status")
    if not status.is_file():
        pytest.skip("the peak is read from /proc (Linux)")
    import resource

    gib = 2**30
    server = int(re.search(r"VmHWM:\s+(\d+) kB", status.read_text()).group(1)) * 1024 / gib
    # the 64 px run's server, as the script printed it (not the --quick run's: real-size models, README's figure)
    script_server = max(SCRIPT_SERVER_PEAK_GB, default=0.0)
    tests = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib
    peak = max(server, script_server) + tests
    print(f"peak resident memory: ComfyUI {server:.2f} GB (the script's ComfyUI {script_server:.2f} GB), "
          f"pytest {tests:.2f} GB, together at most {peak:.2f} GB")
    assert peak <= MAX_MEMORY_GB, f"ComfyUI {server:.2f} GB / {script_server:.2f} GB + pytest {tests:.2f} GB"


# --- the small world: the method's outcome through ComfyUI ---------------------------------------------------
# Defined after the memory test: they start and stop a server of their own on the world's files.

# Runs under COMFYUI_PYTHON in the ComfyUI checkout: core Load CLIP + CLIP Text Encode on the world's prompts, and
# core Load VAE + VAE Encode/Decode on the frames given, saved for the test to compare with the world's own models.
COMFY_ENCODE_SCRIPT = """
import json, sys
base, given, out = sys.argv[1:4]
sys.argv = [sys.argv[0], "--cpu", "--base-directory", base]
sys.path.insert(0, ".")
import comfy.options
comfy.options.enable_args_parsing()
import nodes
from safetensors.torch import load_file, save_file
names = json.loads(open(given + ".json").read())
clip = nodes.CLIPLoader().load_clip(names["clip"], "stable_diffusion")[0]
result = {f"clip.{i}": nodes.CLIPTextEncode().encode(clip, text)[0][0][0].float().contiguous()
          for i, text in enumerate(names["prompts"])}
vae = nodes.VAELoader().load_vae(names["vae"])[0]
latent = nodes.VAEEncode().encode(vae, load_file(given)["images"])[0]
result["latent"] = latent["samples"].float().contiguous()
result["decoded"] = nodes.VAEDecode().decode(vae, latent)[0].float().contiguous()
save_file(result, out)
"""


@pytest.fixture(scope="module")
def world_base(tmp_path_factory):
    """A ComfyUI folder holding only the small world, written by its install script as a user runs it."""
    if not (WORLD_WEIGHTS / "unet.safetensors").is_file():
        pytest.skip(f"the small world's weights are not in {WORLD_WEIGHTS}: train them (benchmarks/world/train.py) "
                    "or set POSECRAFTER_WORLD_WEIGHTS")
    base = comfyui_folders(tmp_path_factory.mktemp("world_base"))
    (base / "models").mkdir()
    done = subprocess.run([sys.executable, "benchmarks/world/install.py", str(base), "--weights", str(WORLD_WEIGHTS)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    yield base
    shutil.rmtree(base / "models", ignore_errors=True)  # 0.5 GB of text encoder


def test_world_text_encoder_and_vae_in_comfyui_are_the_worlds(world_base, tmp_path):
    """ComfyUI's CLIP Text Encode with the installed CLIP-L file gives the embeddings the world's models were
    trained with (models.prompt_embeddings), and its VAE Encode/Decode with the installed TAESD file give the
    world's latents (SD1.5 convention: the TAESD file's vae_scale) and images. ComfyUI keeps a text encoder's
    weights in fp16 on a CPU too (it computes in fp32), so the embeddings differ by that rounding."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from benchmarks.world import install, models
    from benchmarks.world.cases import Case

    frames = Case(*install.CASE).training_frames[:4]
    given, out = tmp_path / "given.safetensors", tmp_path / "out.safetensors"
    save_file({"images": torch.from_numpy(frames).float() / 255}, str(given))
    Path(f"{given}.json").write_text(json.dumps({"clip": install.CLIP, "vae": install.VAE, "prompts": models.PROMPTS}))
    script = tmp_path / "encode.py"
    script.write_text(COMFY_ENCODE_SCRIPT)
    done = subprocess.run([PYTHON, str(script), str(world_base), str(given), str(out)], cwd=COMFYUI,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    comfy = load_file(str(out))

    expected = models.prompt_embeddings()
    text = max((comfy[f"clip.{i}"] - expected[prompt]).abs().max().item() for i, prompt in enumerate(models.PROMPTS))
    vae = models.load_vae(WORLD_WEIGHTS)
    latents = models.encode(vae, frames)
    latent = (comfy["latent"] - latents).abs().max().item()
    decoded = np.abs(comfy["decoded"].numpy() * 255 - models.decode(vae, latents).astype(np.float64)).max()
    print(f"\nsmall world in ComfyUI: CLIP Text Encode vs models.prompt_embeddings max abs difference {text:.2e} "
          f"(embeddings up to {max(e.abs().max().item() for e in expected.values()):.1f}); VAE Encode latents "
          f"{latent:.2e} (up to {latents.abs().max().item():.1f}); VAE Decode {decoded:.2f} of 255")
    assert comfy["clip.0"].shape == (1, models.CONTEXT, 768)
    assert text <= WORLD_TEXT_TOLERANCE
    assert latent <= 1e-3 * latents.abs().max().item()
    assert decoded <= 1.0


def test_small_world_workflow_in_comfyui_scores_like_the_benchmark(world_base, monkeypatch):
    """Workflow (f) as shipped, on the installed world: its saved video has the driving poses' 16 frames at the
    driving video's rate, scores (benchmarks.world.score against the case's ground truth) within the floors of
    the engine-level test, and matches the video the benchmark's own engine path ('full') makes with the same
    weights: a wrong frame order, a latent scaled twice, a mixed-up pose canvas or a reference frame left in
    the output would show as a score drop. Prints the run's time and ComfyUI's peak memory."""
    import numpy as np

    import benchmarks.world as world
    from benchmarks.world import cases, install, models

    script = load_api_script()
    prompt = json.loads((API / "posecrafter_small_world.json").read_text())
    with running_comfyui(world_base) as (server, _, log_path, process):
        started = time.monotonic()
        try:
            outputs = script.wait(server, script.submit(server, prompt), timeout=3600)
        except SystemExit as failure:
            log = log_path.read_text(errors="replace")[-6000:]
            pytest.fail(f"posecrafter_small_world: {failure}\n--- ComfyUI log ---\n{log}")
        seconds = time.monotonic() - started
        status = Path(f"/proc/{process.pid}/status")
        peak = int(status.read_text().split("VmHWM:")[1].split()[0]) / 2**20 if status.is_file() else float("nan")
    (video,) = [item for ui in outputs.values() for item in ui.get("images", []) if item["filename"].endswith(".mp4")]
    frames, rate = read_video(world_base / "output" / video["subfolder"] / video["filename"])
    frames = np.stack(frames)[..., ::-1]  # OpenCV reads BGR
    assert frames.shape == (cases.TARGET_FRAMES, cases.SIZE, cases.SIZE, 3) and rate == install.FPS

    case = cases.Case(*install.CASE)
    scores = world.score(frames, case.ground_truth(cases.TARGET_FRAMES), case.person, case.room)
    monkeypatch.setattr(models, "WEIGHTS", WORLD_WEIGHTS)
    cases._shared.cache_clear()
    try:
        engine = case.run("full")
    finally:
        cases._shared.cache_clear()
    difference = np.abs(frames.astype(np.float64) - case.videos["full"]).mean()
    with_engine = "  ".join(f"{key} {scores[key]:.3g} (engine {engine[key]:.3g})"
                            for key in ("pose", "identity", "background"))
    print(f"\nsmall world in ComfyUI: the workflow ran {seconds:.0f} s, ComfyUI's peak memory {peak:.2f} GiB; "
          f"{with_engine}; mean abs difference to the engine's video {difference:.2f} of 255")
    assert scores["pose"] >= WORLD_MIN_POSE and scores["identity"] <= WORLD_MAX_IDENTITY
    assert scores["background"] >= WORLD_MIN_BACKGROUND_DB
    assert difference <= WORLD_ENGINE_DIFFERENCE


def test_flops_of_comfyuis_core_path_equal_diffusers_pipeline():
    """benchmarks/flops.py --comfyui: ComfyUI's Apply ControlNet + KSampler step, through its own loaders and
    model classes, counts exactly the FLOPs of diffusers' ControlNet pipeline on the same frames (both the
    stock SD1.5 UNet + ControlNet, one image per frame); at 64 px, where it takes seconds."""
    import functools

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from benchmarks import flops
    from posecrafter import memory

    frames, size = 2, 64
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    stock = memory.fake_stock_models(*memory.full_size_configs(), torch.float16, fake_mode)
    diffusers_flops = sum(flops.count(stock, functools.partial(flops.pipeline_steps, frames=frames, height=size,
                                                               width=size), fake_mode).values())
    comfy = flops.comfyui_sampling(Path(COMFYUI), PYTHON, frames, size, diffusers_flops)
    assert comfy["unet_flops"] and comfy["controlnet_flops"] and comfy["outside_flops"] == 0, comfy
    assert comfy["flops"] == diffusers_flops, comfy
