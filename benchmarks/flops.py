"""Exact FLOPs per frame and denoising step of our sampler and diffusers' ControlNet pipeline (and ComfyUI's
core path with --comfyui), and of a tuning step, on the full-size SD1.5 UNet + OpenPose ControlNet (README
"Compute").

    python3 benchmarks/flops.py                     # 512 px, videos of 8 and 16 frames, all four tuning settings
    python3 benchmarks/flops.py --frames 17 --tuning paper+checkpointing --out OUT.json
    python3 benchmarks/flops.py --comfyui /path/to/ComfyUI --comfyui-python /path/to/venv/bin/python --tuning

The models are built from the shipped configs as PyTorch fake tensors (``posecrafter/memory.py``: shapes,
no values, no GPU) and run by the real loops for one step: our sampler (:func:`posecrafter.sampling.sample`,
guidance 1), diffusers' ``StableDiffusionControlNetPipeline`` on the frames as one batch of images (guidance
1, its prompt embedding repeated per image) and the tuner (forward and backward on an 8-frame clip).
``torch.utils.flop_counter.FlopCounterMode`` counts matrix products, convolutions and attention (2 FLOPs per
multiply-add, the attention's two matrix products for fused kernels); normalisation, softmax, activations and
other elementwise operations are not counted. The counts depend only on shapes, so they are exact and the
same on every run. Its per-module counts split the difference between ours and diffusers into the
inflation's parts (:func:`breakdown`), which add up exactly to it. With ``--comfyui``, ComfyUI's core nodes
(Apply ControlNet, KSampler) run one step on the same frames as one batch, guidance 1, through ComfyUI's
own loaders and model classes (``benchmarks/flops_comfyui.py``, in a child process under ComfyUI's Python).
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import diffusers
import torch
from diffusers import StableDiffusionControlNetPipeline
from torch._subclasses.fake_tensor import FakeTensorMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.flop_counting import flop_counter, flops_per_module  # noqa: E402
from benchmarks.run import progress  # noqa: E402
from posecrafter import memory  # noqa: E402
from posecrafter.schedulers import ddim_scheduler  # noqa: E402
from posecrafter.tuning import CLIP_FRAMES, UPDATE_RULES  # noqa: E402
from tests.tiny_models import tiny_vae  # noqa: E402

# Module-name roots as FlopCounterMode names them (by class), for ours and for the stock models.
ROOTS = {"PoseCrafterModel": "model", "PoseCrafterModel.unet": "unet", "PoseCrafterModel.controlnet": "controlnet",
         "UNet2DConditionModel": "unet", "ControlNetModel": "controlnet", "UNetModel": "unet", "ControlNet": "controlnet"}
COMPONENTS = {
    "temporal": "temporal attention branch (attn_temp; conv_temp, applied by the transformer block)",
    "key_frame": "self-attention keys and values (attn1.to_k, to_v): key frame's once per video",
    "prompt": "prompt keys and values (attn2.to_k, to_v): once per video",
    "rest": "everything else (convolutions, queries, attention, outputs, feed-forward, ...)",
}
# Tuning settings by name: update rule and gradient checkpointing.
TUNING_SETTINGS = {rule + suffix: (rule, checkpointing) for rule in UPDATE_RULES
                   for suffix, checkpointing in (("", False), ("+checkpointing", True))}


def component(path: str) -> str:
    """Which part of :data:`COMPONENTS` a module's own FLOPs belong to (``path`` as in :func:`own_flops`)."""
    if ".attn_temp" in path or re.search(r"\.transformer_blocks\.\d+$", path):
        return "temporal"  # a transformer block's own operation is conv_temp, applied in the temporal hook
    if re.search(r"\.attn1\.to_[kv]$", path):
        return "key_frame"
    if re.search(r"\.attn2\.to_[kv]$", path):
        return "prompt"
    return "rest"


def own_flops(totals: dict[str, int]) -> dict[str, int]:
    """FLOPs of each module's own operations (its children's taken out) from a counter's totals per module
    (:func:`flop_counting.flops_per_module`), keyed ``unet.<path>`` / ``controlnet.<path>`` as diffusers or ComfyUI
    names them (``model`` for PoseCrafterModel's own), ``outside`` for what ran outside every module; modules
    without FLOPs of their own are left out."""
    own = dict(totals)
    for name, flops in totals.items():
        if name == "Global":
            continue
        parts = name.split(".")
        ancestors = (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))
        own[next((a for a in ancestors if a in totals), "Global")] -= flops
    named = {"outside": own.pop("Global")}
    for name, flops in own.items():
        root = max((r for r in ROOTS if name == r or name.startswith(r + ".")), key=len)
        named[ROOTS[root] + name[len(root):]] = flops
    return {name: flops for name, flops in named.items() if flops}


def count(model, workload, fake_mode: FakeTensorMode) -> dict[str, int]:
    """Own FLOPs per module of one run of ``workload(model)`` (a workload as in memory.py: its inputs are made
    fake, and memory.StorageTracker answers the loops' reads of fake scalars as in the memory estimate)."""
    with fake_mode:
        _, run = workload(model)
    counter = flop_counter()
    with fake_mode, memory.StorageTracker(fake_mode), counter:
        run()
    return own_flops(flops_per_module(counter))


def pipeline_steps(models, frames: int, height: int, width: int):
    """One step of diffusers' StableDiffusionControlNetPipeline on ``frames`` images in one batch, guidance 1
    (one UNet + ControlNet call; latents out, so its VAE never runs)."""
    unet, controlnet = models
    pipe = StableDiffusionControlNetPipeline(
        vae=tiny_vae(), text_encoder=None, tokenizer=None, unet=unet, controlnet=controlnet,
        scheduler=ddim_scheduler(1), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(frames, 4, height // 8, width // 8, dtype=unet.dtype)
    poses = torch.rand(frames, 3, height, width, dtype=unet.dtype)
    text = torch.randn(frames, memory.TEXT_TOKENS, unet.config.cross_attention_dim, dtype=unet.dtype)

    def run():
        pipe(prompt_embeds=text, image=poses, height=height, width=width, num_inference_steps=1, guidance_scale=1.0,
             latents=latents, output_type="latent")

    return (latents, poses, text), run


def sampling(stock_models, model, frames: int, height: int, width: int, fake_mode) -> dict:
    """One step on a video of ``frames`` frames: our sampler and the pipeline, and the breakdown."""
    ours = count(model, functools.partial(memory.sample_steps, frames=frames, height=height, width=width), fake_mode)
    stock = count(stock_models, functools.partial(pipeline_steps, frames=frames, height=height, width=width),
                  fake_mode)
    return {"frames": frames, **breakdown(ours, stock, frames)}


def breakdown(ours: dict[str, int], stock: dict[str, int], frames: int) -> dict:
    """Both counts (FLOPs on all ``frames`` frames, one step) split into :data:`COMPONENTS`; the difference
    of each part, and ``rest_matches`` when the parts inflation does not touch cost exactly the same."""
    parts = {key: {"posecrafter": 0, "diffusers": 0} for key in COMPONENTS}
    for name, counts in (("posecrafter", ours), ("diffusers", stock)):
        for path, flops in counts.items():
            parts[component(path)][name] += flops
    rest_ours = {p: f for p, f in ours.items() if component(p) == "rest"}
    rest_stock = {p: f for p, f in stock.items() if component(p) == "rest"}
    for part in parts.values():
        part["difference"] = part["posecrafter"] - part["diffusers"]
    total = {name: sum(counts.values()) for name, counts in (("posecrafter", ours), ("diffusers", stock))}
    return {"posecrafter_flops": total["posecrafter"], "diffusers_flops": total["diffusers"],
            "posecrafter_gflop_per_frame": total["posecrafter"] / frames / 1e9,
            "diffusers_gflop_per_frame": total["diffusers"] / frames / 1e9,
            "ratio": total["posecrafter"] / total["diffusers"], "parts": parts,
            "rest_matches": rest_ours == rest_stock}


def comfyui_sampling(comfyui: Path, python: str, frames: int, size: int, diffusers_flops: int) -> dict:
    """One step of ComfyUI's core path on ``frames`` frames (benchmarks/flops_comfyui.py), by UNet and ControlNet,
    and its ratio to diffusers' pipeline (``diffusers_flops``, the same frames and size)."""
    done = subprocess.run([python, str(ROOT / "benchmarks" / "flops_comfyui.py"), str(frames), str(size)], cwd=comfyui,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"counting ComfyUI's FLOPs in {comfyui} with {python} failed: check that it is a ComfyUI "
                         f"folder and that this Python has its requirements and this pack's\n{done.stderr[-4000:]}")
    counts = own_flops(json.loads(done.stdout.splitlines()[-1]))
    total = sum(counts.values())
    parts = {root: sum(f for path, f in counts.items() if path.split(".")[0] == root) for root in ("unet", "controlnet")}
    return {"flops": total, "gflop_per_frame": total / frames / 1e9, "unet_flops": parts["unet"],
            "controlnet_flops": parts["controlnet"], "outside_flops": total - sum(parts.values()),
            "ratio_to_diffusers": total / diffusers_flops}


def comfyui_version(comfyui: Path) -> str:
    version = comfyui / "comfyui_version.py"
    return version.read_text().split("__version__ = ")[-1].strip().strip('"') if version.is_file() else "unknown"


def tuning(fake_mode, configs, frames: int, height: int, width: int, update_rule: str,
           gradient_checkpointing: bool, dtype=torch.bfloat16) -> dict:
    """FLOPs of one tuning step (forward and backward on a clip of ``min(frames, 8)`` frames; AdamW's
    elementwise update is not counted), on a freshly built model (the tuner changes it)."""
    model = memory.fake_model(*configs, dtype, fake_mode)
    flops = sum(count(model, functools.partial(memory.tune_as_on_cuda, frames=frames, height=height, width=width,
                                               update_rule=update_rule, gradient_checkpointing=gradient_checkpointing,
                                               steps=1), fake_mode).values())
    clip = min(frames, CLIP_FRAMES)
    return {"update_rule": update_rule, "gradient_checkpointing": gradient_checkpointing, "clip_frames": clip,
            "flops": flops, "gflop_per_frame": flops / clip / 1e9}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="frame size in pixels (default 512)")
    parser.add_argument("--frames", type=int, nargs="*", default=[8, 16],
                        help="video lengths counted for sampling (default 8 16; none: no sampling rows)")
    parser.add_argument("--tuning", nargs="*", choices=list(TUNING_SETTINGS), default=list(TUNING_SETTINGS),
                        help="tuning settings counted (default all; none: no tuning rows)")
    parser.add_argument("--comfyui", type=Path, metavar="COMFYUI_DIR",
                        help="also count ComfyUI's core path (Apply ControlNet + KSampler) in this ComfyUI checkout")
    parser.add_argument("--comfyui-python", default=sys.executable,
                        help="the Python with ComfyUI's requirements and this pack's (default: this one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flops.json",
                        help="JSON file, written after every row (default benchmarks/results/flops.json)")
    args = parser.parse_args(argv)
    if args.size % 8 or args.size <= 0:
        parser.error(f"--size must be a positive multiple of 8, got {args.size}")
    if any(frames < 1 for frames in args.frames):
        parser.error("--frames: every video needs at least one frame")
    if args.comfyui and not (args.comfyui / "main.py").is_file():
        parser.error(f"--comfyui {args.comfyui}: no main.py there; give the folder of a ComfyUI checkout")

    report = {"size": args.size, "torch": torch.__version__, "diffusers": diffusers.__version__,
              "counted": "matrix products, convolutions, attention (FlopCounterMode); not elementwise ops",
              "guidance_scale": 1.0, "sampling": [], "tuning": []}
    if args.comfyui:
        report["comfyui"] = comfyui_version(args.comfyui)

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    configs = memory.full_size_configs()
    try:
        progress("building the full-size models as fake tensors")
        model = memory.fake_model(*configs, torch.float16, fake_mode)
        stock_models = memory.fake_stock_models(*configs, torch.float16, fake_mode)
        for frames in args.frames:
            start = time.perf_counter()
            progress(f"sampling, {frames} frames: our sampler and diffusers' pipeline, one step each")
            result = sampling(stock_models, model, frames, args.size, args.size, fake_mode)
            if args.comfyui:
                result["comfyui"] = comfyui_sampling(args.comfyui, args.comfyui_python, frames, args.size,
                                                     result["diffusers_flops"])
            report["sampling"].append(result)
            save()
            progress(f"  {result['posecrafter_gflop_per_frame']:.3f} vs {result['diffusers_gflop_per_frame']:.3f} "
                     f"GFLOP per frame (ratio {result['ratio']:.4f}; {time.perf_counter() - start:.0f} s)")
        for rule, checkpointing in (TUNING_SETTINGS[name] for name in args.tuning):
            start = time.perf_counter()
            progress(f"tuning, \"{rule}\" rule, gradient checkpointing {'on' if checkpointing else 'off'}: "
                     f"one step on {CLIP_FRAMES} frames")
            result = tuning(fake_mode, configs, CLIP_FRAMES, args.size, args.size, rule, checkpointing)
            report["tuning"].append(result)
            save()
            progress(f"  {result['gflop_per_frame']:.3f} GFLOP per frame ({time.perf_counter() - start:.0f} s)")
    except KeyboardInterrupt:
        progress(f"interrupted; {args.out} holds what was counted by then")
        return 130
    print(format_table(report))
    print(f"\nwritten to {args.out}")
    return 0


def format_table(report) -> str:
    lines = []
    for run in report["sampling"]:
        frames = run["frames"]
        lines += [f"| per frame and step, {report['size']} px, guidance 1, {frames} frames | diffusers GFLOP | "
                  "ours GFLOP | difference |", "|---|---|---|---|"]
        for key, label in COMPONENTS.items():
            part = run["parts"][key]
            lines += [f"| {label} | {part['diffusers'] / frames / 1e9:.3f} | {part['posecrafter'] / frames / 1e9:.3f} "
                      f"| {part['difference'] / frames / 1e9:+.3f} |"]
        lines += [f"| total | {run['diffusers_gflop_per_frame']:.3f} | {run['posecrafter_gflop_per_frame']:.3f} | "
                  f"ratio {run['ratio']:.4f} |", ""]
        if "comfyui" in run:
            comfy = run["comfyui"]
            lines += [f"ComfyUI {report['comfyui']}'s core path (Apply ControlNet + KSampler, the {frames} frames as one "
                      f"batch): {comfy['gflop_per_frame']:.3f} GFLOP per frame and step (UNet "
                      f"{comfy['unet_flops'] / frames / 1e9:.3f}, ControlNet {comfy['controlnet_flops'] / frames / 1e9:.3f}"
                      f"), {comfy['ratio_to_diffusers']:.4f} x diffusers", ""]
    if report["tuning"]:
        lines += ["| tuning step, 8-frame clip | GFLOP per frame |", "|---|---|"]
        lines += [f"| \"{r['update_rule']}\" rule{', gradient checkpointing' if r['gradient_checkpointing'] else ''} "
                  f"| {r['gflop_per_frame']:.3f} |" for r in report["tuning"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
