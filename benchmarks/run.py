"""Speed and memory of PoseCrafter on the full-size SD1.5 UNet + OpenPose ControlNet (random weights).

Speed and memory do not depend on weight values, so randomly initialised models of the real size measure
them honestly. The random weights are written once as an SD1.5 single-file checkpoint and an OpenPose
ControlNet file (``tests/sd15_random.py``, nothing is downloaded), and every peer loads those same files.
One command runs everything, prints a table and writes JSON (and the table as Markdown):

    python3 benchmarks/run.py                                        # CPU, reduced size (64 px)
    python3 benchmarks/run.py --comfyui /path/to/ComfyUI             # ... beside ComfyUI's own path
    bash benchmarks/gpu.sh                                           # the GPU run of README "Performance"

Measured, all in one run on the same weights, each part on its own (a part that fails is recorded as an
error and the others still run):
- per frame and denoising step, guidance 1, best of alternating runs: diffusers'
  StableDiffusionControlNetPipeline, our sampler, and with ``--comfyui`` ComfyUI's core path (its checkpoint
  and ControlNet loaders, KSampler DDIM with the ControlNet applied to the prompt as Apply ControlNet does);
- memory in video length: peak memory of windowed sampling for several M and its slope per frame;
- sampling: seconds per step for M frames, plain and in windows, with peak memory;
- tuning: seconds per step on 8-frame clips, both update rules, with and without gradient checkpointing;
- the deviation of fp16/bf16 noise predictions from fp32;
- with ``--channels-last`` / ``--compile``: our sampler in channels-last memory format / ``torch.compile``d,
  against itself in the default layout, per frame and step (best of alternating runs).
Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and the process's peak resident memory on a CPU
(both include the weights). ``--tiny`` swaps in the tests' tiny models: it checks that the script works
(``benchmarks/gpu.sh --dry-run``), its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionControlNetPipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from posecrafter import memory  # noqa: E402
from posecrafter.loading import load_controlnet, load_unet  # noqa: E402
from posecrafter.model import PoseCrafterModel, to_model_space  # noqa: E402
from posecrafter.sampling import sample  # noqa: E402
from posecrafter.schedulers import ddim_scheduler  # noqa: E402
from posecrafter.skeleton import SkeletonVideo  # noqa: E402
from posecrafter.tuning import UPDATE_RULES, OneShotTuner  # noqa: E402
from tests.sd15_random import write_sd15_files  # noqa: E402
from tests.tiny_models import random_poses, tiny_controlnet, tiny_unet, tiny_vae  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PARTS = ("per_frame_step", "memory_in_video_length", "sampling", "tuning", "precision", "layout_and_compile")


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


def best_of_alternating(device, runs, steps, repeats=3):
    """Seconds of the fastest of ``repeats`` runs of each ``runs[name](steps)``, the runs taking turns so a busy
    machine slows all alike (after one 1-step warm-up each)."""
    for run in runs.values():
        run(1)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], timed(device, lambda: run(steps))[0])
    return best


def write_model_files(folder: Path) -> tuple[Path, Path]:
    """The random-weight SD1.5 checkpoint and OpenPose ControlNet every peer loads (about 3 GB, fp16)."""
    checkpoint, controlnet = folder / "sd15_random.safetensors", folder / "openpose_random.safetensors"
    write_sd15_files(checkpoint, controlnet, None)
    return checkpoint, controlnet


def build_stock_models(files, dtype, device, tiny):
    """Stock diffusers UNet and ControlNet: loaded from ``files`` by our loaders, or the tests' tiny models."""
    if tiny:
        unet, controlnet = tiny_unet(), tiny_controlnet()
    else:
        unet, controlnet = load_unet(files[0], dtype=dtype, device=device), load_controlnet(files[1], dtype=dtype,
                                                                                             device=device)
    return unet.to(device, dtype).eval().requires_grad_(False), controlnet.to(device, dtype).eval().requires_grad_(False)


def inputs(frames, size, device, text_width, seed=0):
    """Raw latents, the skeletons of random whole-body poses (drawn per window) and one prompt embedding."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(frames, 4, size // 8, size // 8, generator=generator) * 5
    text = torch.randn(1, 77, text_width, generator=generator)
    return latents.to(device), SkeletonVideo(random_poses(frames, size, size, seed), size, size, device), text.to(device)


class ComfyCorePeer:
    """What a ComfyUI user runs without this pack: ComfyUI's SD1.5 model and ControlNet, loaded by its own
    loaders from the same files, sampled by its KSampler (DDIM, guidance 1, so no unconditional pass) with the
    ControlNet set on the prompt as the Apply ControlNet node sets it. ComfyUI is imported from ``path`` into
    this process; it picks its own attention kernel and precision handling, as it does for its users."""

    def __init__(self, path, files, dtype, device):
        sys.path.insert(0, str(Path(path).resolve()))
        import comfy.cli_args

        comfy.cli_args.args.cpu = device.type == "cpu"
        import comfy.controlnet
        import comfy.model_management
        import comfy.sample
        import comfy.sd
        from comfy.ldm.modules import attention

        self._sample, self._model_management = comfy.sample.sample, comfy.model_management
        self.model = comfy.sd.load_checkpoint_guess_config(
            str(files[0]), output_vae=False, output_clip=False, model_options={"dtype": dtype})[0]
        self.controlnet = comfy.controlnet.load_controlnet(str(files[1]), model_options={"dtype": dtype})
        comfy.model_management.load_models_gpu([self.model])
        self.attention = attention.optimized_attention.__name__
        self.unet_dtype = str(self.model.model.get_dtype()).replace("torch.", "")

    def close(self):
        """Let ComfyUI's model manager drop the models, so their memory is freed."""
        self._model_management.unload_all_models()
        self._model_management.current_loaded_models.clear()
        del self.model, self.controlnet

    def sample(self, latents, pose_images, text, steps):
        control = self.controlnet.copy().set_cond_hint(pose_images, 1.0, (0.0, 1.0))
        positive = [[text, {"control": control, "control_apply_to_uncond": False}]]
        negative = [[torch.zeros_like(text), {}]]
        return self._sample(self.model, latents, steps, 1.0, "ddim", "ddim_uniform", positive, negative,
                            torch.zeros_like(latents), disable_pbar=True, seed=0)


def per_frame_step(stock, model, frames, size, steps, device, comfy_peer):
    """Seconds per frame and step of diffusers' ControlNet pipeline (F images in one batch), our sampler (F
    frames) and ComfyUI's core path when given, guidance 1, on the same weights."""
    unet, controlnet = stock
    pipe = StableDiffusionControlNetPipeline(
        vae=tiny_vae().to(device, unet.dtype), text_encoder=None, tokenizer=None, unet=unet, controlnet=controlnet,
        scheduler=ddim_scheduler(steps), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    latents, poses, text = inputs(frames, size, device, model.text_width)
    pose_images = poses[:]  # the pipeline takes images: all three get the same pre-drawn tensor

    def run_pipeline(n_steps):
        with torch.no_grad():
            return pipe(prompt_embeds=text.repeat(frames, 1, 1).to(unet.dtype), image=pose_images.to(unet.dtype),
                        height=size, width=size, num_inference_steps=n_steps, guidance_scale=1.0,
                        latents=to_model_space(latents).to(unet.dtype), output_type="latent")

    runs = {"diffusers_pipeline_s": run_pipeline,
            "posecrafter_s": lambda n: sample(model, latents, pose_images, text, steps=n)}
    if comfy_peer is not None:
        runs["comfyui_core_s"] = lambda n: comfy_peer.sample(latents, pose_images, text, n)
    best = best_of_alternating(device, runs, steps)
    result = {"frames": frames, **{name: seconds / (frames * steps) for name, seconds in best.items()}}
    result["ratio"] = result["posecrafter_s"] / result["diffusers_pipeline_s"]
    if comfy_peer is not None:
        result["ratio_comfyui"] = result["posecrafter_s"] / result["comfyui_core_s"]
        result["comfyui_attention"], result["comfyui_dtype"] = comfy_peer.attention, comfy_peer.unet_dtype
    return result


def estimate_gb(estimate, *args, **kwargs):
    """posecrafter/memory.py's estimate (GB) of a run measured here, or its error: printed beside the measured
    peak so the first GPU run calibrates the estimator (``--estimate``)."""
    try:
        return {"estimate_gb": estimate(*args, **kwargs) / 2**30}
    except Exception as error:  # recorded; the measurement stands without it
        return {"estimate_error": f"{type(error).__name__}: {error}"}


def sampling_run(model, frames, size, steps, device, context_length, context_overlap, estimate=False):
    latents, poses, text = inputs(frames, size, device, model.text_width)
    with PeakMemory(device) as peak:
        seconds, out = timed(device, lambda: sample(model, latents, poses, text, steps=steps,
                                                     context_length=context_length, context_overlap=context_overlap))
    if not torch.isfinite(out).all():
        raise RuntimeError(f"sampling {frames} frames produced non-finite latents")
    result = {"frames": frames, "windows": context_length is not None, "steps": steps,
              "seconds_per_step": seconds / steps, "peak_memory_gb": peak.peak / 2**30}
    if estimate:
        result.update(estimate_gb(memory.sampling_peak, frames, size, size, context_length=context_length,
                                  context_overlap=context_overlap, dtype=model.dtype))
    return result


def memory_in_video_length(model, frame_counts, size, device, context_length, context_overlap, estimate=False):
    """Peak memory of one windowed sampling step for each video length M (+ the reference), and the slope of
    a straight line through them in KB per frame: what grows with the video once the windows bound the rest.
    One unmeasured run first, so one-time allocations (buffers, caches) do not count as growth."""
    sampling_run(model, frame_counts[0] + 1, size, 1, device, context_length, context_overlap)
    runs = [sampling_run(model, m + 1, size, 1, device, context_length, context_overlap, estimate) for m in frame_counts]
    slope = np.polyfit([r["frames"] for r in runs], [r["peak_memory_gb"] * 2**30 for r in runs], 1)[0]
    return {"runs": runs, "slope_kb_per_frame": slope / 1024,
            "latents_kb_per_frame": 4 * (size // 8) ** 2 * 4 / 1024}


def tuning_run(model, size, steps, device, update_rule, gradient_checkpointing, estimate=False):
    latents, poses, text = inputs(8, size, device, model.text_width)
    tuner = OneShotTuner(model, latents, poses, text, update_rule=update_rule,
                         gradient_checkpointing=gradient_checkpointing)
    try:
        tuner.step(tuner.sample_clip())  # warm-up (allocates the gradient buffers)
        with PeakMemory(device) as peak:
            seconds, _ = timed(device, lambda: [tuner.step(tuner.sample_clip()) for _ in range(steps)])
    finally:
        tuner.close()
    result = {"update_rule": update_rule, "gradient_checkpointing": gradient_checkpointing,
              "seconds_per_step": seconds / steps, "peak_memory_gb": peak.peak / 2**30}
    if estimate:
        result.update(estimate_gb(memory.tuning_peak, 8, size, size, update_rule, gradient_checkpointing, model.dtype))
    return result


def precision_deviation(model, size, device, dtypes):
    """Max and mean |eps_low - eps_fp32| on a 4-frame video, relative to the fp32 prediction's std."""
    latents, poses, text = inputs(4, size, device, model.text_width, seed=1)
    z, t, pose_images = to_model_space(latents), torch.tensor(500, device=device), poses[:]
    with torch.no_grad():
        reference = copy.deepcopy(model).float()(z, t, text, pose_images, num_frames=4).float()
        results = {}
        for name in dtypes:
            low = copy.deepcopy(model).to(DTYPES[name])
            out = low(z, t, text, pose_images, num_frames=4).float()
            del low
            scale = reference.std().item()
            results[name] = {"max_abs": (out - reference).abs().max().item() / scale,
                             "mean_abs": (out - reference).abs().mean().item() / scale}
    return results


def layout_and_compile(model, frames, size, steps, device, channels_last, compile_model):
    """Our sampler per frame and step in the default layout, in channels-last memory format (a copy of the
    model) and ``torch.compile``d (its compile time apart), best of alternating runs; each variant's ratio to
    the default layout. A variant that fails is recorded with its error."""
    latents, poses, text = inputs(frames, size, device, model.text_width)
    pose_images = poses[:]
    variants = {"default": model}
    result = {"frames": frames}
    if channels_last:
        variants["channels_last"] = copy.deepcopy(model).to(memory_format=torch.channels_last)
    if compile_model:
        try:
            compiled = torch.compile(model, dynamic=False)
            result["compile_s"] = timed(device, lambda: sample(compiled, latents, pose_images, text, steps=1))[0]
            variants["compiled"] = compiled
        except Exception as error:  # the benchmark records what failed and goes on
            result["compiled"] = {"error": f"{type(error).__name__}: {error}"}
    runs = {name: (lambda n, m=m: sample(m, latents, pose_images, text, steps=n)) for name, m in variants.items()}
    best = best_of_alternating(device, runs, steps)
    for name, seconds in best.items():
        result[name] = {"seconds": seconds / (frames * steps), "ratio": seconds / best["default"]}
    return result


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Report:
    """The results so far, written to JSON and Markdown after every part, so a run that is stopped or fails
    midway keeps what it measured."""

    def __init__(self, out: Path, table: Path, parts=None, **header):
        self.out, self.table, self.parts, self.data = out, table, parts, dict(header)

    def part(self, name, measure):
        if self.parts is not None and name not in self.parts:
            return None
        progress(name.replace("_", " "))
        try:
            self.data[name] = measure()
        except Exception as error:  # one part's failure is recorded; the other parts still run
            traceback.print_exc()
            self.data[name] = {"error": f"{type(error).__name__}: {error}"}
        self.save()
        return self.data[name]

    def save(self):
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.data, indent=2))
        self.table.write_text(format_table(self.data) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="sampling precision (fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--size", type=int, default=None, help="frame size in pixels (512 on GPU, 64 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps timed per run (10 on GPU, 2 on CPU)")
    parser.add_argument("--frames", type=int, nargs="+", default=None,
                        help="video lengths M for the sampling table (16 64 100 on GPU, 16 64 on CPU)")
    parser.add_argument("--memory-frames", type=int, nargs="+", default=None,
                        help="video lengths M for memory in video length (16 100 1000 on GPU, 16 64 256 on CPU)")
    parser.add_argument("--context-length", type=int, default=16)
    parser.add_argument("--context-overlap", type=int, default=4)
    parser.add_argument("--tune-steps", type=int, default=None, help="tuning steps timed (10 on GPU, 2 on CPU)")
    parser.add_argument("--comfyui", type=Path, default=None,
                        help="a ComfyUI checkout: adds ComfyUI's core path to the per frame and step comparison")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time our sampler with the model in channels-last memory format")
    parser.add_argument("--compile", action="store_true",
                        help="also time our sampler on the torch.compile'd model (compiling takes minutes)")
    parser.add_argument("--estimate", action="store_true",
                        help="print posecrafter/memory.py's estimate beside every measured peak (full-size models only)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=None, help="run only these parts (default all)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models: checks the script only")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/<device>.json)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("fp16" if gpu else "fp32")]
    size = args.size or (512 if gpu else 64)
    steps = args.steps or (10 if gpu else 2)
    frames = args.frames or ([16, 64, 100] if gpu else [16, 64])
    memory_frames = args.memory_frames or ([16, 100, 1000] if gpu else [16, 64, 256])
    tune_steps = args.tune_steps or (10 if gpu else 2)
    if not gpu:
        torch.set_flush_denormal(True)
    estimate = args.estimate and not args.tiny
    ratio_frames = args.context_length  # one window: the batch the sampler runs on long videos
    out = args.out or Path(__file__).parent / "results" / f"{device.type}.json"

    report = Report(out, out.with_suffix(".md"), args.parts, device=device_name(device),
                    dtype=str(dtype).replace("torch.", ""), size=size, torch=torch.__version__, tiny=args.tiny,
                    context=[args.context_length, args.context_overlap])
    with tempfile.TemporaryDirectory(prefix="posecrafter_benchmark_") as folder:
        files = None
        if not args.tiny:
            progress("writing the random-weight SD1.5 checkpoint and OpenPose ControlNet")
            files = write_model_files(Path(folder))
        progress(f"loading {'tiny' if args.tiny else 'full-size'} models on {report.data['device']} "
                 f"({report.data['dtype']})")
        stock = build_stock_models(files, dtype, device, args.tiny)
        model = PoseCrafterModel(*copy.deepcopy(stock))
        comfy_peer, report.data["comfyui"] = None, "not run: no --comfyui checkout given"
        if args.comfyui is not None and not args.tiny:
            progress(f"loading the same files with ComfyUI's loaders from {args.comfyui}")
            try:
                comfy_peer, report.data["comfyui"] = ComfyCorePeer(args.comfyui, files, dtype, device), str(args.comfyui)
            except Exception as error:  # recorded; the rest of the benchmark runs without that row
                traceback.print_exc()
                report.data["comfyui"] = f"failed to load: {type(error).__name__}: {error}"
        report.part("per_frame_step", lambda: per_frame_step(stock, model, ratio_frames, size, steps, device,
                                                             comfy_peer))
        report.part("memory_in_video_length", lambda: memory_in_video_length(
            model, memory_frames, size, device, args.context_length, args.context_overlap, estimate))
    if comfy_peer is not None:
        comfy_peer.close()
    del stock, comfy_peer
    report.part("sampling", lambda: [sampling_run(model, m + 1, size, steps, device, context, args.context_overlap,
                                                  estimate)
                                     for m in frames for context in (None, args.context_length)])
    report.part("tuning", lambda: [tuning_run(model, size, tune_steps, device, rule, checkpointing, estimate)
                                   for rule in UPDATE_RULES for checkpointing in (False, True)])
    report.part("precision", lambda: precision_deviation(model, size, device, ["fp16", "bf16"]))
    if args.channels_last or args.compile:
        report.part("layout_and_compile", lambda: layout_and_compile(model, ratio_frames, size, steps, device,
                                                                     args.channels_last, args.compile))
    print(format_table(report.data))
    print(f"\nwritten to {report.out} and {report.table}")
    return report.data


def _failed(part) -> str | None:
    return part.get("error") if isinstance(part, dict) else None


def _per_frame_step_lines(ratio, report):
    lines = ["| per frame and step, guidance 1 | seconds |", "|---|---|",
             f"| diffusers StableDiffusionControlNetPipeline ({ratio['frames']} images) | {ratio['diffusers_pipeline_s']:.4f} |",
             f"| PoseCrafter sampler ({ratio['frames']} frames) | {ratio['posecrafter_s']:.4f} |"]
    if "comfyui_core_s" in ratio:
        lines += [f"| ComfyUI core KSampler + ControlNet ({ratio['frames']} images; {ratio['comfyui_attention']}, "
                  f"{ratio['comfyui_dtype']}) | {ratio['comfyui_core_s']:.4f} |"]
    lines += [f"| ratio PoseCrafter / diffusers | {ratio['ratio']:.3f} |"]
    if "ratio_comfyui" in ratio:
        lines += [f"| ratio PoseCrafter / ComfyUI core | {ratio['ratio_comfyui']:.3f} |"]
    else:
        lines += [f"| ratio PoseCrafter / ComfyUI core | not run ({report.get('comfyui')}) |"]
    return lines


def _peak(run, digits=2):
    """The measured peak, and beside it the estimator's figure and measured / estimate when it was asked for."""
    measured = f"{run['peak_memory_gb']:.{digits}f}"
    if "estimate_gb" in run:
        return f"{measured} (estimate {run['estimate_gb']:.{digits}f}, ratio {run['peak_memory_gb'] / run['estimate_gb']:.3f})"
    if "estimate_error" in run:
        return f"{measured} (estimate failed: {run['estimate_error']})"
    return measured


def _memory_lines(memory, report):
    context = report["context"]
    return [f"| memory in video length: M (+ reference), windows {context[0]}/{context[1]}, 1 step | "
            "peak memory GB |", "|---|---|",
            *[f"| {r['frames'] - 1} | {_peak(r, 3)} |" for r in memory["runs"]],
            "", f"Slope: {memory['slope_kb_per_frame']:.0f} KB per frame (the latents alone: "
            f"{memory['latents_kb_per_frame']:.0f} KB per frame at this size, fp32)."]


def _sampling_lines(sampling, report):
    return ["| sampling: frames (M + reference) | windows | s / step | 50 steps (extrapolated) | peak memory GB |",
            "|---|---|---|---|---|",
            *[f"| {r['frames']} | {'yes' if r['windows'] else 'no'} | {r['seconds_per_step']:.3f} | "
              f"{50 * r['seconds_per_step']:.1f} | {_peak(r)} |" for r in sampling]]


def _tuning_lines(tuning, report):
    return [f"| tuning, 8-frame clips, {report['dtype']} frozen weights | s / step | peak memory GB |", "|---|---|---|",
            *[f"| \"{r['update_rule']}\" rule, {'with' if r['gradient_checkpointing'] else 'without'} "
              f"gradient checkpointing | {r['seconds_per_step']:.3f} | {_peak(r)} |" for r in tuning]]


def _precision_lines(precision, report):
    return ["| noise prediction vs fp32 (relative to its std) | max | mean |", "|---|---|---|",
            *[f"| {name} | {r['max_abs']:.2e} | {r['mean_abs']:.2e} |" for name, r in precision.items()]]


def _variant_lines(variants, report):
    lines = [f"| our sampler, {variants['frames']} frames, per frame and step | seconds | ratio to default |",
             "|---|---|---|"]
    labels = {"default": "default layout", "channels_last": "channels-last",
              "compiled": f"torch.compile ({variants.get('compile_s', 0):.0f} s to compile)"}
    for name, label in labels.items():
        if name in variants:
            r = variants[name]
            lines += [f"| {label} | failed: {r['error']} | |" if "error" in r else
                      f"| {label} | {r['seconds']:.4f} | {r['ratio']:.3f} |"]
    return lines


# Each part's table: (the part's key in the report, its name in a failure line, what formats its result).
TABLES = (
    ("per_frame_step", "per frame and step", _per_frame_step_lines),
    ("memory_in_video_length", "memory in video length", _memory_lines),
    ("sampling", "sampling", _sampling_lines),
    ("tuning", "tuning", _tuning_lines),
    ("precision", "precision", _precision_lines),
    ("layout_and_compile", "channels-last / torch.compile", _variant_lines),
)


def format_table(report) -> str:
    lines = [f"PoseCrafter benchmark: {report['device']}, {report['dtype']}, {report['size']}x{report['size']} px, "
             f"torch {report['torch']}" + (" (tiny test models: the numbers mean nothing)" if report["tiny"] else ""), ""]
    for key, name, table_lines in TABLES:
        part = report.get(key)
        if part is not None:
            lines += [f"{name}: failed ({part['error']})"] if _failed(part) else table_lines(part, report)
            lines += [""]
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    main()
