"""Workflow (a) through a real ComfyUI: start main.py --cpu on 127.0.0.1 with this pack as a custom node,
queue the API twin of workflow (a) with POST /prompt and check that a video comes out.

Runs only when COMFYUI_PATH points at a ComfyUI checkout (with its requirements installed in this
Python). The PoseCrafter models are tiny ones the test writes; CLIP and the VAE come from an SD1.5
checkpoint in that ComfyUI's models/checkpoints, named by POSECRAFTER_TEST_CHECKPOINT (default
v1-5-pruned-emaonly.safetensors), because ComfyUI's loaders only take full-size CLIP and VAE weights.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.comfy_pack import ROOT

COMFYUI = os.environ.get("COMFYUI_PATH")
CHECKPOINT = os.environ.get("POSECRAFTER_TEST_CHECKPOINT", "v1-5-pruned-emaonly.safetensors")
SIZE = 64

pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run this test")


def write_video(path, frames):
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (SIZE, SIZE))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(180, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    writer.release()


def write_models(root):
    from diffusers import ControlNetModel, UNet2DConditionModel

    from tests.test_dwpose import build_detector, build_pose_model
    from tests.tiny_models import CONTROLNET_CONFIG, UNET_CONFIG

    # tiny, but with SD1.5's 768-wide text embeddings so ComfyUI's CLIP Text Encode fits
    UNet2DConditionModel(**{**UNET_CONFIG, "cross_attention_dim": 768}).save_pretrained(root / "diffusers" / "tiny-sd15" / "unet")
    ControlNetModel(**{**CONTROLNET_CONFIG, "cross_attention_dim": 768}).save_pretrained(root / "controlnet" / "tiny-openpose")
    (root / "dwpose").mkdir()
    build_detector(root / "dwpose" / "yolox_l.onnx")
    build_pose_model(root / "dwpose" / "dw-ll_ucoco_384.onnx")


def tiny_prompt():
    """Workflow (a)'s API twin, pointed at the tiny models, 64x64 frames and 2 steps everywhere."""
    prompt = json.loads((ROOT / "workflows" / "api" / "posecrafter_one_shot.json").read_text())
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(node_id)
    (checkpoint,) = by_type["CheckpointLoaderSimple"]
    prompt[checkpoint]["inputs"]["ckpt_name"] = CHECKPOINT
    (vae_loader,) = by_type["VAELoader"]
    del prompt[vae_loader]  # the checkpoint's own VAE is used instead
    for node_id in by_type["VAEEncode"] + by_type["VAEDecode"]:
        prompt[node_id]["inputs"]["vae"] = [checkpoint, 2]
    (loader,) = by_type["PoseCrafterModelLoader"]
    prompt[loader]["inputs"].update(checkpoint="diffusers/tiny-sd15", controlnet="tiny-openpose", dtype="fp32")
    for node_id in by_type["ImageScale"]:
        prompt[node_id]["inputs"].update(width=SIZE, height=SIZE)
    for kind in ("PoseCrafterOneShotTuner", "PoseCrafterDDIMInverter", "PoseCrafterTemporalSampler"):
        (node_id,) = by_type[kind]
        prompt[node_id]["inputs"]["steps"] = 2
    for node_id in by_type["PoseCrafterDWPoseExtractor"]:
        prompt[node_id]["inputs"]["fill_gaps"] = True
    return prompt


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workflow_a_runs_in_comfyui(tmp_path):
    comfyui = Path(COMFYUI)
    if not (comfyui / "models" / "checkpoints" / CHECKPOINT).is_file():
        pytest.skip(f"no {CHECKPOINT} in {comfyui}/models/checkpoints (set POSECRAFTER_TEST_CHECKPOINT)")
    models, inputs, outputs, nodes = (tmp_path / name for name in ("models", "input", "output", "custom_nodes"))
    for folder in (models, inputs, outputs, nodes):
        folder.mkdir()
    write_models(models)
    write_video(inputs / "training.mp4", 4)
    write_video(inputs / "driving.mp4", 3)
    (nodes / "comfyui-posecrafter").symlink_to(ROOT, target_is_directory=True)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(
        "posecrafter_test:\n"
        f"  base_path: {models}\n"
        "  diffusers: diffusers\n  controlnet: controlnet\n  dwpose: dwpose\n  posecrafter: posecrafter\n"
        f"  custom_nodes: {nodes}\n"
    )
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "comfyui.log", "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--input-directory", str(inputs), "--output-directory", str(outputs),
         "--extra-model-paths-config", str(config)],
        cwd=comfyui, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                info = json.loads(urllib.request.urlopen(f"{server}/object_info/PoseCrafterModelLoader", timeout=5).read())
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("ComfyUI did not start:\n" + (tmp_path / "comfyui.log").read_text()[-4000:])
                time.sleep(1)
        assert "PoseCrafterModelLoader" in info, "the pack did not load:\n" + (tmp_path / "comfyui.log").read_text()[-4000:]

        import importlib.util

        spec = importlib.util.spec_from_file_location("run_api_workflow", ROOT / "scripts" / "run_api_workflow.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        prompt = tiny_prompt()
        outputs_by_node = script.wait(server, script.submit(server, prompt), timeout=600)
        saved = script.fetch_outputs(server, outputs_by_node, str(tmp_path / "fetched"))
        assert any(path.endswith(".mp4") for path in saved), saved
        (save_node,) = [i for i, n in prompt.items() if n["class_type"] == "PoseCrafterSaveTuned"]
        tuned = Path(outputs_by_node[save_node]["text"][0])
        assert tuned.name == "posecrafter_tuned.safetensors" and tuned.is_file()
        if tmp_path not in tuned.parents:
            tuned.unlink()  # written to the checkout's models/posecrafter: leave it as it was
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
