"""What a larger small world would cost on this machine: ``python benchmarks/world/larger_world_cost.py``
(about 2 minutes on 2 CPU cores).

The world renders at 128 px, where a face's landmarks span about 2x2 latent pixels; README's "What it does not
show" weighs a 192 or 256 px world against the issue's budgets. At each frame size this times the three steps
those budgets are made of: a diffusion training step of ``train.py`` (a fresh UNet and ControlNet, 16 frames,
backward and AdamW), a one-shot tuning step of the engine on the committed weights (8 frames) and a sampling step
(9 frames: the inserted reference and 8 targets). It prints seconds per step and the ratio to 128 px; the models
are the committed architecture, trained or not (a step costs the same).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from benchmarks.world import models
from benchmarks.world.train import predict_noise
from posecrafter.sampling import sample
from posecrafter.tuning import tune

SIZES = (128, 192, 256)
REPEATS = 4


def seconds_per_call(fn) -> float:
    """Mean wall time of ``REPEATS`` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn()
    return (time.perf_counter() - start) / REPEATS


def step_seconds(size: int, text: torch.Tensor) -> dict[str, float]:
    latent = size // 8
    generator = torch.Generator().manual_seed(size)
    unet = models.new_unet()
    controlnet = models.new_controlnet(unet)
    optimizer = torch.optim.AdamW([*unet.parameters(), *controlnet.parameters()], lr=1e-4)
    noisy = torch.randn(16, 4, latent, latent, generator=generator)
    skeletons = torch.rand(16, 3, size, size, generator=generator)
    timesteps = torch.randint(0, 1000, (16,), generator=generator)

    def training_step():
        predict_noise(unet, controlnet, noisy, timesteps, text.expand(16, -1, -1), skeletons).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    model = models.load_video_model()
    frames = torch.randn(9, 4, latent, latent, generator=generator)
    poses = torch.rand(9, 3, size, size, generator=generator)
    with torch.no_grad():
        sampling = seconds_per_call(lambda: sample(model, frames, poses, text, steps=1))
    return {"training": seconds_per_call(training_step),
            "tuning": seconds_per_call(lambda: tune(model, frames[:8], poses[:8], text, steps=1)),
            "sampling": sampling}


def main() -> int:
    text = models.prompt_embeddings(["a person"])["a person"]
    rows = {}
    for size in SIZES:
        rows[size] = step_seconds(size, text)
        print(f"{size} px done", flush=True)
    print("| frame size | latents | training step (s) | tuning step (s) | sampling step (s) |")
    print("|---|---|---|---|---|")
    for size, row in rows.items():
        cells = " | ".join(f"{row[k]:.2f} ({row[k] / rows[SIZES[0]][k]:.1f}x)" for k in row)
        print(f"| {size} | {size // 8}x{size // 8} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
