"""Speed and memory of PoseCrafter on the full-size SD1.5 UNet + OpenPose ControlNet (random weights).

Speed and memory do not depend on weight values, so randomly initialised models of the real size measure
them honestly. One command runs everything, prints a table and writes JSON:

    python3 benchmarks/run.py                                        # CPU, reduced size (64 px), a few minutes
    python3 benchmarks/run.py --device cuda --dtype fp16 --size 512  # the GPU numbers of README "Performance"

Measured, all in one run on the same models:
- diffusers' StableDiffusionControlNetPipeline against our sampler, per frame and denoising step (guidance 1),
  and with ``--compile`` our sampler on the ``torch.compile``d model too (its compile time reported apart);
- sampling: seconds per step and for all steps, for M frames, plain and in windows, with peak memory;
- tuning: seconds per step on 8-frame clips, with and without gradient checkpointing ("paper" rule);
- the deviation of fp16/bf16 noise predictions from fp32.
Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and the process's peak resident memory on a CPU
(both include the weights).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import threading
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionControlNetPipeline, UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from posecrafter.loading import OPENPOSE_CONTROLNET_CONFIG, SD15_UNET_CONFIG  # noqa: E402
from posecrafter.model import PoseCrafterModel, to_model_space  # noqa: E402
from posecrafter.sampling import sample  # noqa: E402
from posecrafter.schedulers import ddim_scheduler  # noqa: E402
from posecrafter.tuning import OneShotTuner  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class PeakMemory:
    """Peak memory (bytes) while the block runs: CUDA allocator peak, or resident set size sampled every 5 ms."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._stop = threading.Event()
            self.peak = _rss()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def timed(device, fn):
    """(seconds, result) of fn(), synchronised on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def build_stock_models(dtype, device):
    """Full-size SD1.5 UNet and OpenPose ControlNet, randomly initialised, from the configs the pack ships."""
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(SD15_UNET_CONFIG)))
        controlnet = ControlNetModel.from_config(ControlNetModel.load_config(str(OPENPOSE_CONTROLNET_CONFIG)))
    return unet.to(dtype).eval().requires_grad_(False), controlnet.to(dtype).eval().requires_grad_(False)


def inputs(frames, size, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(frames, 4, size // 8, size // 8, generator=generator) * 5
    poses = torch.rand(frames, 3, size, size, generator=generator)
    text = torch.randn(1, 77, 768, generator=generator)
    return latents.to(device), poses, text.to(device)


def per_frame_step_comparison(unet, controlnet, frames, size, steps, device, compile_model, repeats=3):
    """Seconds per frame and step of diffusers' ControlNet pipeline (F images in one batch) and of our sampler
    (F frames), guidance 1, on the same weights, and of our sampler on the ``torch.compile``d model if
    ``compile_model``. The runs are timed alternately and the best of ``repeats`` runs of each is kept, so a busy
    machine slows all alike. Returns the model (inflated in place from ``unet``/``controlnet``), the seconds per
    frame and step by name, and the compile time."""
    tiny_vae = AutoencoderKL(block_out_channels=(4,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                             up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4, layers_per_block=1)
    pipe = StableDiffusionControlNetPipeline(
        vae=tiny_vae.to(device, unet.dtype), text_encoder=None, tokenizer=None, unet=unet, controlnet=controlnet,
        scheduler=ddim_scheduler(steps), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    latents, poses, text = inputs(frames, size, device)
    stock = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.controlnet)  # the pipeline keeps un-inflated copies
    pipe.unet, pipe.controlnet = stock
    model = PoseCrafterModel(unet, controlnet)

    def run_pipeline(n_steps):
        with torch.no_grad():
            return pipe(prompt_embeds=text.repeat(frames, 1, 1).to(unet.dtype), image=poses.to(device, unet.dtype),
                        height=size, width=size, num_inference_steps=n_steps, guidance_scale=1.0,
                        latents=to_model_space(latents).to(unet.dtype), output_type="latent")

    runs = {"diffusers_pipeline_s": run_pipeline, "posecrafter_s": lambda n: sample(model, latents, poses, text, steps=n)}
    compile_seconds = None
    if compile_model:
        compiled = torch.compile(model, dynamic=False)
        runs["posecrafter_compiled_s"] = lambda n: sample(compiled, latents, poses, text, steps=n)
        compile_seconds = timed(device, lambda: runs["posecrafter_compiled_s"](1))[0]
    for run in runs.values():
        run(1)  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], timed(device, lambda: run(steps))[0])
    return model, {name: seconds / (frames * steps) for name, seconds in best.items()}, compile_seconds


def sampling_run(model, frames, size, steps, device, context_length, context_overlap):
    latents, poses, text = inputs(frames, size, device)
    with PeakMemory(device) as memory:
        seconds, out = timed(device, lambda: sample(model, latents, poses, text, steps=steps,
                                                     context_length=context_length, context_overlap=context_overlap))
    if not torch.isfinite(out).all():
        raise RuntimeError(f"sampling {frames} frames produced non-finite latents")
    return {"frames": frames, "windows": context_length is not None, "steps": steps,
            "seconds_per_step": seconds / steps, "peak_memory_gb": memory.peak / 2**30}


def tuning_run(model, size, steps, device, gradient_checkpointing):
    latents, poses, text = inputs(8, size, device)
    tuner = OneShotTuner(model, latents, poses, text, update_rule="paper",
                         gradient_checkpointing=gradient_checkpointing)
    try:
        tuner.step(tuner.sample_clip())  # warm-up (allocates the gradient buffers)
        with PeakMemory(device) as memory:
            seconds, _ = timed(device, lambda: [tuner.step(tuner.sample_clip()) for _ in range(steps)])
    finally:
        tuner.close()
    return {"gradient_checkpointing": gradient_checkpointing, "seconds_per_step": seconds / steps,
            "peak_memory_gb": memory.peak / 2**30}


def precision_deviation(model, size, device, dtypes):
    """Max and mean |eps_low - eps_fp32| on a 4-frame video, relative to the fp32 prediction's std."""
    latents, poses, text = inputs(4, size, device, seed=1)
    z, t = to_model_space(latents), torch.tensor(500, device=device)
    with torch.no_grad():
        reference = copy.deepcopy(model).float()(z, t, text, poses.to(device), num_frames=4).float()
        results = {}
        for name in dtypes:
            low = copy.deepcopy(model).to(DTYPES[name])
            out = low(z, t, text, poses.to(device), num_frames=4).float()
            del low
            scale = reference.std().item()
            results[name] = {"max_abs": (out - reference).abs().max().item() / scale,
                             "mean_abs": (out - reference).abs().mean().item() / scale}
    return results


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="sampling precision (fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--size", type=int, default=None, help="frame size in pixels (512 on GPU, 64 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps timed per run (10 on GPU, 2 on CPU)")
    parser.add_argument("--frames", type=int, nargs="+", default=None,
                        help="video lengths M for sampling and memory (16 64 100 on GPU, 16 64 on CPU)")
    parser.add_argument("--context-length", type=int, default=16)
    parser.add_argument("--context-overlap", type=int, default=4)
    parser.add_argument("--tune-steps", type=int, default=None, help="tuning steps timed (10 on GPU, 2 on CPU)")
    parser.add_argument("--channels-last", action="store_true", help="run the models in channels-last memory format")
    parser.add_argument("--compile", action="store_true",
                        help="also time our sampler on the torch.compile'd model (compiling takes minutes)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/<device>.json)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("fp16" if gpu else "fp32")]
    size = args.size or (512 if gpu else 64)
    steps = args.steps or (10 if gpu else 2)
    frames = args.frames or ([16, 64, 100] if gpu else [16, 64])
    tune_steps = args.tune_steps or (10 if gpu else 2)
    if not gpu:
        torch.set_flush_denormal(True)
    ratio_frames = 16 if gpu else 4

    report = {"device": device_name(device), "dtype": str(dtype).replace("torch.", ""), "size": size,
              "torch": torch.__version__, "channels_last": args.channels_last, "compile": args.compile}
    progress(f"building full-size models on {report['device']} ({report['dtype']})")
    unet, controlnet = build_stock_models(dtype, device)
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)
        controlnet.to(memory_format=torch.channels_last)
    progress("diffusers pipeline against our sampler")
    model, seconds, compile_seconds = per_frame_step_comparison(unet, controlnet, ratio_frames, size, steps, device,
                                                                args.compile)
    report["per_frame_step"] = {"frames": ratio_frames, **seconds,
                                "ratio": seconds["posecrafter_s"] / seconds["diffusers_pipeline_s"]}
    if args.compile:
        report["per_frame_step"]["compile_s"] = compile_seconds

    report["sampling"] = []
    for m in frames:
        progress(f"sampling {m} frames + the reference, plain and in windows")
        report["sampling"].append(sampling_run(model, m + 1, size, steps, device, None, args.context_overlap))
        report["sampling"].append(sampling_run(model, m + 1, size, steps, device, args.context_length,
                                               args.context_overlap))
    windowed = [r for r in report["sampling"] if r["windows"]]
    report["windowed_memory_ratio"] = {"frames": [frames[0], frames[-1]],
                                       "ratio": windowed[-1]["peak_memory_gb"] / windowed[0]["peak_memory_gb"]}

    progress("tuning, without and with gradient checkpointing")
    report["tuning"] = [tuning_run(model, size, tune_steps, device, gc) for gc in (False, True)]
    progress("fp16/bf16 against fp32")
    report["precision"] = precision_deviation(model, size, device, ["fp16", "bf16"])

    print(format_table(report))
    out = args.out or Path(__file__).parent / "results" / f"{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")
    return report


def format_table(report) -> str:
    layout = ", channels-last" if report["channels_last"] else ""
    lines = [f"PoseCrafter benchmark: {report['device']}, {report['dtype']}{layout}, "
             f"{report['size']}x{report['size']} px, torch {report['torch']}", ""]
    ratio = report["per_frame_step"]
    lines += ["| per frame and step, guidance 1 | seconds |", "|---|---|",
              f"| diffusers StableDiffusionControlNetPipeline ({ratio['frames']} images) | {ratio['diffusers_pipeline_s']:.4f} |",
              f"| PoseCrafter sampler ({ratio['frames']} frames) | {ratio['posecrafter_s']:.4f} |",
              f"| ratio PoseCrafter / diffusers | {ratio['ratio']:.3f} |"]
    if "posecrafter_compiled_s" in ratio:
        lines += [f"| PoseCrafter sampler, torch.compile ({ratio['compile_s']:.0f} s to compile) | "
                  f"{ratio['posecrafter_compiled_s']:.4f} |"]
    lines += [""]
    lines += ["| sampling: frames (M + reference) | windows | s / step | 50 steps (estimate) | peak memory GB |",
              "|---|---|---|---|---|"]
    for r in report["sampling"]:
        lines.append(f"| {r['frames']} | {'yes' if r['windows'] else 'no'} | {r['seconds_per_step']:.2f} | "
                     f"{50 * r['seconds_per_step']:.1f} | {r['peak_memory_gb']:.2f} |")
    memory = report["windowed_memory_ratio"]
    lines += ["", f"Windowed peak memory, M = {memory['frames'][1]} vs M = {memory['frames'][0]}: "
              f"{memory['ratio']:.3f}x", ""]
    lines += [f"| tuning, 8-frame clips, {report['dtype']} frozen weights, \"paper\" rule | s / step | peak memory GB |", "|---|---|---|"]
    for r in report["tuning"]:
        label = "with gradient checkpointing" if r["gradient_checkpointing"] else "without gradient checkpointing"
        lines.append(f"| {label} | {r['seconds_per_step']:.2f} | {r['peak_memory_gb']:.2f} |")
    lines += ["", "| noise prediction vs fp32 (relative to its std) | max | mean |", "|---|---|---|"]
    for name, r in report["precision"].items():
        lines.append(f"| {name} | {r['max_abs']:.2e} | {r['mean_abs']:.2e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
