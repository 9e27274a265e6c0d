"""Put the small world into a ComfyUI folder as a user would have its files:
``python benchmarks/world/install.py COMFYUI_DIR``, then run ``workflows/posecrafter_small_world.json``.

Writes (nothing else, and no existing file is replaced unless ``--replace`` is given):
- ``models/diffusers/posecrafter_small_world_unet/`` and ``models/controlnet/posecrafter_small_world_controlnet/``:
  the world's UNet and ControlNet as diffusers folders (config.json + safetensors), for PoseCrafter Model Loader;
- ``models/vae/posecrafter_small_world_taesd.safetensors``: the world's VAE in ComfyUI's TAESD key layout, with
  ``vae_scale`` 0.18215 and ``vae_shift`` 0 inside, so core Load VAE gives SD1.5-convention latents as the pack
  expects (ComfyUI takes a state dict with ``taesd_decoder.1.weight`` as TAESD and reads those two scalars);
- ``models/text_encoders/posecrafter_small_world_clip_l.safetensors``: the fixed random CLIP-L text encoder
  (fp32, about 0.5 GB) in transformers' key layout, for core Load CLIP with type ``stable_diffusion``;
- ``input/``: the first outcome case's training video (24 frames) and driving video (16 frames) as lossless
  mp4 (PNG frames) at 12 fps, and their poses as Save Poses JSON (the renderer's ground truth, since DWPose cannot see
  the world's people).

``COMFYUI_DIR`` is the folder holding ComfyUI's ``models/`` (the ComfyUI checkout, or the ``--base-directory``
ComfyUI is started with).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
from safetensors.torch import save_file

from benchmarks.world import models
from benchmarks.world.cases import DRIVING_SEED_OFFSET, SIZE, TARGET_FRAMES, Case
from benchmarks.world.outcome import CASES
from benchmarks.world.people import background, identity, render
from posecrafter.model import LATENT_SCALE
from posecrafter.pose import to_pose_keypoint

CASE = CASES[0]  # (identity seed, background seed, training motion, driving motion)
SOURCE_PROMPT = models.prompt(identity(CASE[0]).shirt)  # what the case tunes and samples with
FPS = 12  # the world's motions are made at 12 frames per second
UNET = "posecrafter_small_world_unet"  # a folder in models/diffusers (Model Loader lists it as diffusers/<name>)
CONTROLNET = "posecrafter_small_world_controlnet"  # a folder in models/controlnet
VAE = "posecrafter_small_world_taesd.safetensors"  # in models/vae
CLIP = "posecrafter_small_world_clip_l.safetensors"  # in models/text_encoders
TRAINING_VIDEO, DRIVING_VIDEO = "small_world_training.mp4", "small_world_driving.mp4"  # in input/
TRAINING_POSES, DRIVING_POSES = "small_world_training_poses.json", "small_world_driving_poses.json"  # in input/
TARGETS = {
    "unet": Path("models", "diffusers", UNET), "controlnet": Path("models", "controlnet", CONTROLNET),
    "vae": Path("models", "vae", VAE), "clip": Path("models", "text_encoders", CLIP),
    "training_video": Path("input", TRAINING_VIDEO), "driving_video": Path("input", DRIVING_VIDEO),
    "training_poses": Path("input", TRAINING_POSES), "driving_poses": Path("input", DRIVING_POSES),
}


def taesd_state_dict(vae) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderTiny``'s weights under ComfyUI's TAESD keys. Both number the same layers, except
    that ComfyUI's decoder starts with its clamp as layer 0 (diffusers applies the clamp outside its layer list).
    ComfyUI feeds the encoder 0..1 images and takes 0..1 from the decoder, which is what diffusers' layers see
    inside (it maps -1..1 in and out around them), so the weights carry over unchanged."""
    state = {}
    for key, value in vae.state_dict().items():
        part, _, index, rest = key.split(".", 3)  # "encoder", "layers", "3", "conv.0.weight"
        if part == "decoder":
            index = str(int(index) + 1)
        state[f"taesd_{part}.{index}.{rest}"] = value.detach().float().contiguous()
    state["vae_scale"] = torch.tensor(LATENT_SCALE)
    state["vae_shift"] = torch.tensor(0.0)
    return state


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """uint8 RGB frames [F, H, W, 3] as an mp4 of PNG frames: lossless, and decoded as rgb24, which ComfyUI's Load
    Video divides by 255, so its frames are exactly the rendered ones (lossless H.264 decodes as planar RGB, which
    ComfyUI converts to float with errors up to 1/255). Browsers do not play it: the Load Video preview stays empty."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("png", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def world_case() -> tuple[Case, np.ndarray]:
    """The installed case (outcome's first) and its driving video: the driving person (another body and look) in
    another room."""
    case = Case(*CASE)
    driving = render(case.driving(TARGET_FRAMES), identity(case.driving_seed),
                     background(CASE[1] + DRIVING_SEED_OFFSET, SIZE))
    return case, driving


def comfyui_folder(path: Path) -> Path:
    """``path`` if it looks like a ComfyUI folder (it holds models/), else a ValueError saying what to give."""
    if not path.exists():
        raise ValueError(f"COMFYUI_DIR {path} does not exist: give the folder of your ComfyUI (the one holding "
                         "main.py and models/, or the --base-directory you start ComfyUI with)")
    if not path.is_dir():
        raise ValueError(f"COMFYUI_DIR {path} is a file, not a folder: give the folder of your ComfyUI")
    if not (path / "models").is_dir():
        raise ValueError(f"COMFYUI_DIR {path} has no models/ folder, so it is not a ComfyUI folder: give the folder "
                         "holding ComfyUI's main.py and models/ (or the --base-directory you start ComfyUI with)")
    return path


def install(comfyui: Path, weights: Path = models.WEIGHTS, replace: bool = False) -> dict[str, Path]:
    """Write the world's files into ``comfyui`` (see the module docstring); returns {what: path}. Existing files
    are refused before anything is written, unless ``replace``."""
    comfyui = comfyui_folder(Path(comfyui))
    paths = {what: comfyui / target for what, target in TARGETS.items()}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not replace:
        raise ValueError("these files are already there and are not overwritten: " + ", ".join(existing)
                         + "; delete them, or pass --replace to write the world's files over them")
    vae = models.load_vae(weights)  # every weight file is read before anything is written
    unet, controlnet = models.load_unet_and_controlnet(weights)
    for path in paths.values():
        if path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    unet.half().save_pretrained(paths["unet"], safe_serialization=True)  # the trained weights are fp16
    controlnet.half().save_pretrained(paths["controlnet"], safe_serialization=True)
    save_file(taesd_state_dict(vae), str(paths["vae"]))
    save_file(models.clip_state_dict(), str(paths["clip"]))
    write_inputs(paths)
    return paths


def write_inputs(paths: dict[str, Path]) -> None:
    """The case's videos and pose files (Save Poses' JSON) at ``paths``' training/driving video/poses."""
    case, driving = world_case()
    write_video(paths["training_video"], case.training_frames)
    write_video(paths["driving_video"], driving)
    paths["training_poses"].write_text(json.dumps(to_pose_keypoint(case.training_poses)))
    paths["driving_poses"].write_text(json.dumps(to_pose_keypoint(case.driving(TARGET_FRAMES))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("comfyui", type=Path, metavar="COMFYUI_DIR", help="the folder holding ComfyUI's models/")
    parser.add_argument("--weights", type=Path, default=models.WEIGHTS,
                        help="the world's trained weights (vae, unet, controlnet .safetensors)")
    parser.add_argument("--replace", action="store_true", help="write over the world's files from an earlier install")
    args = parser.parse_args(argv)
    try:
        paths = install(args.comfyui, args.weights, args.replace)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    for what, path in paths.items():
        print(f"{what}: {path}")
    print("done: open workflows/posecrafter_small_world.json in ComfyUI and run it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
