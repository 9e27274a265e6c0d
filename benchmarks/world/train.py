"""Train the small world's models: ``python benchmarks/world/train.py`` (about 90 minutes on 2 CPU cores).

Three stages, each resumable from its last checkpoint (``--work``, every ``--save-every`` steps and on Ctrl-C):

1. ``vae``: a TAESD-layout ``AutoencoderTiny`` on random crops of rendered frames (it is fully convolutional),
   reconstruction L1 + MSE, with a penalty that keeps its latents at unit RMS (the UNet's latent space).
2. ``vae_detail``: the same VAE on crops around the face features and hands, whose pixels weigh ten times as much:
   they are a few pixels per frame, and without this stage the VAE paints the eyes, brows and mouth over with skin.
3. ``diffusion``: the UNet and its OpenPose-style ControlNet trained together from scratch on single frames, as an
   SD1.5-family text-to-image model with pose control: DDPM noise (SD1.5's schedule, epsilon prediction, min-SNR
   loss weights with gamma 5, Hang et al. 2023, which speed up convergence), the skeleton image the pack draws as the
   hint, a prompt naming the shirt colour (20% "a person", 10% empty, so guidance works), and an exponential moving
   average of the weights, which is what gets saved. Its frames are a pool of ``--pool`` samples rendered and
   encoded once: encoding a batch costs more than the models' training step. Its pool and checkpoint sit in a
   folder of ``--work`` named after the VAE's weights, so a changed VAE never meets stale latents.

Every sample is a different person, room, motion kind and moment (seeds from 1,000,000 up: the benchmark's cases use
seeds below 1,000), so the base model knows no single person. Data and noise are drawn from seeds derived from the
step number, so a resumed run continues the same stream. The final weights (fp16 safetensors) and the loss curves
go to ``--out``; the script refuses to overwrite weights already there unless ``--out`` is given.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import save_file
from tqdm import tqdm

from benchmarks.world import models
from benchmarks.world.people import LABELS, MOTIONS, background, identity, motion, render_frame
from posecrafter.model import to_model_space
from posecrafter.schedulers import SCHEDULER_CONFIG
from posecrafter.skeleton import render_skeleton

TRAIN_SEEDS = 1_000_000
SIZE = models.SIZE
DETAIL_LABELS = ("features", "hands")  # the vae_detail stage's crops and weights
DETAIL_WEIGHT = 9.0


def random_frame(rng: np.random.Generator):
    """A random person in a random room at a random moment of a random motion: (frame, labels, poses, index,
    person)."""
    person = identity(int(rng.integers(TRAIN_SEEDS, 2**31)))
    room = background(int(rng.integers(TRAIN_SEEDS, 2**31)), SIZE)
    kind = MOTIONS[int(rng.integers(len(MOTIONS)))]
    frames = 24
    poses = motion(kind, frames, int(rng.integers(TRAIN_SEEDS, 2**31)), SIZE)
    index = int(rng.integers(frames))
    image, labels = render_frame(poses.points[index], person, room)
    return image, labels, poses, index, person


def training_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """A random frame, its skeleton image and the person's shirt colour."""
    image, _, poses, index, person = random_frame(rng)
    return image, render_skeleton(poses, index, SIZE, SIZE), person.shirt


def batch(step: int, size: int, seed: int):
    rng = np.random.default_rng([seed, step])
    images, skeletons, shirts = zip(*(training_sample(rng) for _ in range(size)))
    to_tensor = lambda x: torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    return to_tensor(images), to_tensor(skeletons), list(shirts)


def text_for(shirt: str, rng: np.random.Generator) -> str:
    """The prompt a training sample gets: empty 10% of the time, "a person" 20%, else its shirt colour."""
    roll = rng.random()
    return "" if roll < 0.1 else models.prompt(None) if roll < 0.3 else models.prompt(shirt)


def diffusion_pool(vae, size: int, seed: int, work: Path) -> dict:
    """``size`` training samples rendered and encoded once, cached in ``work`` (read back with weights_only=True):
    the UNet's latents, the skeleton hints (uint8) and each person's shirt colour."""
    path = work / f"diffusion_pool_{seed}_{size}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    latents, skeletons, shirts = [], [], []
    for chunk in tqdm(range(0, size, 64), desc="rendering and encoding the diffusion pool", unit="chunk"):
        images, hints, colours = batch(chunk, min(64, size - chunk), seed)
        frames = (images.permute(0, 2, 3, 1) * 255).round().byte().numpy()
        with torch.no_grad():
            latents.append(to_model_space(models.encode(vae, frames)))
        skeletons.append((hints * 255).round().byte())
        shirts += colours
    pool = {"latents": torch.cat(latents), "skeletons": torch.cat(skeletons), "shirts": shirts}
    work.mkdir(parents=True, exist_ok=True)
    torch.save(pool, path)
    return pool


def min_snr_weights(schedule: DDPMScheduler, timesteps: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Per-sample loss weights min(SNR, gamma) / SNR for epsilon prediction (Hang et al. 2023, "Efficient Diffusion
    Training via Min-SNR Weighting Strategy")."""
    alpha_bar = schedule.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


class Checkpoint:
    """A stage's resumable state in ``work``: module and optimizer state dicts (torch.save, read back with
    weights_only=True), the step and the losses so far."""

    def __init__(self, work: Path, stage: str):
        self.path = work / f"{stage}.pt"

    def load(self):
        return torch.load(self.path, weights_only=True) if self.path.is_file() else None

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(self.path)


def lr_at(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``peak``. A Python float: the optimizer's state goes into
    checkpoints that are read back with ``weights_only=True``, which refuses numpy scalars."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return float(peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))))


def run_stage(name: str, modules: dict[str, torch.nn.Module], loss_fn, steps: int, lr: float, work: Path,
              save_every: int, extra_state=None) -> list[float]:
    """The shared loop: AdamW, the LR schedule, gradient clipping, progress, checkpoints and Ctrl-C."""
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    checkpoint = Checkpoint(work, name)
    state = checkpoint.load()
    start, losses = 0, []
    if state is not None:
        for key, module in modules.items():
            module.load_state_dict(state[key])
        optimizer.load_state_dict(state["optimizer"])
        if extra_state is not None:
            extra_state.load(state)
        start, losses = int(state["step"]), list(state["losses"])
        print(f"{name}: resuming at step {start} of {steps}")

    def save(step):
        payload = {key: module.state_dict() for key, module in modules.items()}
        payload.update(optimizer=optimizer.state_dict(), step=step, losses=losses)
        if extra_state is not None:
            payload.update(extra_state.state())
        checkpoint.save(payload)

    bar = tqdm(range(start, steps), initial=start, total=steps, desc=name, unit="step")
    step = start
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr)
            loss = loss_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if extra_state is not None:
                extra_state.update()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if (step + 1) % save_every == 0:
                save(step + 1)
        step = steps
    except KeyboardInterrupt:
        save(step)
        print(f"\n{name}: interrupted at step {step}; saved to {checkpoint.path}. Run the same command to resume.")
        raise SystemExit(130)
    save(steps)
    return losses


def reconstruction_loss(vae, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The VAE's round trip of ``images`` ([-1, 1]): per-pixel L1 + MSE averaged with ``weights`` [B, 1, H, W],
    plus a penalty that keeps the latents at unit RMS (the UNet's latent space)."""
    latents = vae.encode(images).latents
    error = vae.decode(latents).sample - images
    per_pixel = (error.abs() + error.pow(2)).mean(dim=1, keepdim=True)
    rms = latents.pow(2).mean().sqrt()
    return (per_pixel * weights).sum() / weights.sum() + 0.01 * (rms - 1) ** 2


def detail_batch(step: int, size: int, crop: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops for the detail stage: centred near a face-feature pixel (half of them), a hand pixel (a quarter) or
    anywhere, with loss weights ``1 + DETAIL_WEIGHT`` on those two labels' pixels: (images [-1, 1], weights)."""
    rng = np.random.default_rng([seed, step])
    crops, weights = [], []
    for _ in range(size):
        image, labels, *_ = random_frame(rng)
        roll = rng.random()
        aim = "features" if roll < 0.5 else "hands" if roll < 0.75 else None
        ys, xs = np.nonzero(labels == LABELS.index(aim)) if aim else ((), ())
        if len(ys):
            pick = int(rng.integers(len(ys)))
            centre = np.array([ys[pick], xs[pick]]) + rng.integers(-crop // 4, crop // 4 + 1, 2)
            y, x = np.clip(centre - crop // 2, 0, SIZE - crop).tolist()
        else:
            y, x = rng.integers(0, SIZE - crop + 1, 2).tolist()
        detail = np.isin(labels, [LABELS.index(name) for name in DETAIL_LABELS])
        crops.append(image[y:y + crop, x:x + crop])
        weights.append(1 + DETAIL_WEIGHT * detail[y:y + crop, x:x + crop].astype(np.float32))
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return images, torch.from_numpy(np.stack(weights))[:, None]


def train_vae(args, work: Path) -> tuple[torch.nn.Module, dict[str, list[float]]]:
    """Stage 1 (``vae``): random crops, every pixel weighted alike. Stage 2 (``vae_detail``): the same VAE on crops
    around the face features and hands, whose few pixels weigh ``1 + DETAIL_WEIGHT`` (without it the VAE blurs
    eyes, brows and mouth into the skin)."""
    torch.manual_seed(args.seed)
    vae = models.new_vae().train()

    def loss_fn(step):
        images, _, _ = batch(step, args.vae_batch, args.seed + 1)
        generator = torch.Generator().manual_seed(args.seed * 7919 + step)
        y, x = torch.randint(0, SIZE - args.vae_crop + 1, (2,), generator=generator).tolist()
        crop = images[:, :, y:y + args.vae_crop, x:x + args.vae_crop] * 2 - 1
        return reconstruction_loss(vae, crop, torch.ones_like(crop[:, :1]))

    def detail_loss_fn(step):
        return reconstruction_loss(vae, *detail_batch(step, args.vae_batch, args.vae_crop, args.seed + 6))

    losses = {"vae": run_stage("vae", {"vae": vae}, loss_fn, args.vae_steps, args.vae_lr, work, args.save_every),
              "vae_detail": run_stage("vae_detail", {"vae": vae}, detail_loss_fn, args.vae_detail_steps,
                                      args.vae_detail_lr, work, args.save_every)}
    return vae.eval().requires_grad_(False), losses


def fingerprint(module: torch.nn.Module) -> str:
    """A short SHA-256 of a module's weights: the diffusion stage's pool and checkpoint belong to one VAE."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class EMA:
    """An exponential moving average of the diffusion models' weights (decay ramps up to ``decay``)."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.modules, self.decay, self.updates = modules, decay, 0
        self.shadow = {k: {n: p.detach().clone() for n, p in m.state_dict().items()} for k, m in modules.items()}

    def update(self):
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for key, module in self.modules.items():
                for name, value in module.state_dict().items():
                    if value.is_floating_point():
                        self.shadow[key][name].lerp_(value, 1 - decay)

    def state(self):
        return {"ema": self.shadow, "ema_updates": self.updates}

    def load(self, state):
        self.shadow, self.updates = state["ema"], int(state["ema_updates"])


def predict_noise(unet, controlnet, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                  skeletons: torch.Tensor) -> torch.Tensor:
    """The UNet's noise prediction with the ControlNet's residuals for the skeleton images (single frames)."""
    down, mid = controlnet(noisy, timesteps, encoder_hidden_states=text, controlnet_cond=skeletons, return_dict=False)
    return unet(noisy, timesteps, encoder_hidden_states=text, down_block_additional_residuals=down,
                mid_block_additional_residual=mid, return_dict=False)[0]


def train_diffusion(args, work: Path, vae) -> tuple[dict, list[float]]:
    torch.manual_seed(args.seed + 2)
    unet = models.new_unet()
    controlnet = models.new_controlnet(unet)
    with torch.no_grad():  # the zero convs start small, not zero, so the hint trains from the first step
        generator = torch.Generator().manual_seed(args.seed + 3)
        for name, param in controlnet.named_parameters():
            if "controlnet_" in name and name.endswith("weight") and "cond_embedding" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 1e-3)
    unet.train()
    controlnet.train()
    schedule = DDPMScheduler.from_pretrained(str(SCHEDULER_CONFIG))
    print("building the fixed CLIP-L text encoder and the prompts' embeddings ...")
    embeddings = models.prompt_embeddings()
    modules = {"unet": unet, "controlnet": controlnet}
    ema = EMA(modules, args.ema)

    work = work / f"vae-{fingerprint(vae)}"  # the pool and the checkpoint hold this VAE's latents
    pool = diffusion_pool(vae, args.pool, args.seed + 4, work)

    def loss_fn(step):
        rng = np.random.default_rng([args.seed + 5, step])
        picks = torch.from_numpy(rng.choice(args.pool, args.batch, replace=False))
        latents, skeletons = pool["latents"][picks], pool["skeletons"][picks].float() / 255
        text = torch.cat([embeddings[text_for(pool["shirts"][i], rng)] for i in picks.tolist()])
        generator = torch.Generator().manual_seed(args.seed * 104729 + step)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, schedule.config.num_train_timesteps, (len(latents),), generator=generator)
        predicted = predict_noise(unet, controlnet, schedule.add_noise(latents, noise, timesteps), timesteps, text,
                                  skeletons)
        per_sample = F.mse_loss(predicted, noise, reduction="none").mean(dim=(1, 2, 3))
        return (min_snr_weights(schedule, timesteps) * per_sample).mean()

    losses = run_stage("diffusion", modules, loss_fn, args.steps, args.lr, work, args.save_every, ema)
    return ema.shadow, losses


def plot_losses(curves: dict[str, list[float]], path: Path) -> None:
    """Loss curves (a 50-step running mean, log scale) side by side, drawn with OpenCV."""
    panels = []
    for name, losses in curves.items():
        width, height, margin = 480, 300, 50
        canvas = np.full((height, width, 3), 255, np.uint8)
        smooth = np.convolve(losses, np.ones(50) / 50, mode="valid") if len(losses) >= 50 else np.asarray(losses)
        values = np.log10(smooth)
        low, high = values.min(), values.max() + 1e-9
        xs = margin + np.arange(len(values)) * (width - margin - 10) / max(1, len(values) - 1)
        ys = height - margin - (values - low) / (high - low) * (height - margin - 30)
        cv2.polylines(canvas, [np.stack([xs, ys], 1).astype(np.int32)], False, (200, 60, 20), 1, cv2.LINE_AA)
        cv2.rectangle(canvas, (margin, 30), (width - 10, height - margin), (0, 0, 0), 1)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(canvas, f"{name} loss (50-step mean)", (margin, 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{10 ** high:.3g}", (2, 38), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{10 ** low:.3g}", (2, height - margin), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"step 0 .. {len(losses)}", (margin, height - 20), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(canvas)
    cv2.imwrite(str(path), np.concatenate(panels, axis=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    here = Path(__file__).parent
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the final weights (default {models.WEIGHTS}, never overwritten unless "
                             "named here)")
    parser.add_argument("--work", type=Path, default=here / "checkpoints", help="checkpoint folder (resume from it)")
    parser.add_argument("--steps", type=int, default=3000, help="diffusion steps (batch --batch)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pool", type=int, default=4096, help="diffusion training samples, rendered and encoded once")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--vae-steps", type=int, default=2400)
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--vae-crop", type=int, default=48)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--vae-detail-steps", type=int, default=1000, help="steps of the VAE's detail stage")
    parser.add_argument("--vae-detail-lr", type=float, default=3e-4)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "pool", "vae_steps", "vae_detail_steps", "vae_batch", "save_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.vae_crop % 8 or not 8 <= args.vae_crop <= SIZE:
        parser.error(f"--vae-crop must be a multiple of 8 between 8 and {SIZE}, got {args.vae_crop}")
    if args.pool < args.batch:
        parser.error(f"--pool must hold at least one batch (--batch {args.batch}), got {args.pool}")
    return args


def _shown(value) -> str:
    """An argument as training.json records it: paths inside the repository relative to it."""
    root = Path(__file__).resolve().parents[2]
    if isinstance(value, Path) and value.resolve().is_relative_to(root):
        return str(value.resolve().relative_to(root))
    return str(value)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = models.WEIGHTS if args.out is None else args.out
    if args.out is None and any((out / name).exists() for name in models.WEIGHT_FILES):
        print(f"{out} already holds trained weights; pass --out DIR to train into another folder "
              f"(or --out {out} to replace them).", file=sys.stderr)
        return 2
    started = time.time()
    vae, vae_losses = train_vae(args, args.work)
    shadow, diffusion_losses = train_diffusion(args, args.work, vae)
    out.mkdir(parents=True, exist_ok=True)
    half = lambda state: {k: v.half().contiguous() for k, v in state.items()}  # noqa: E731
    save_file(half(vae.state_dict()), str(out / "vae.safetensors"))
    save_file(half(shadow["unet"]), str(out / "unet.safetensors"))
    save_file(half(shadow["controlnet"]), str(out / "controlnet.safetensors"))
    curves = {**vae_losses, "diffusion": diffusion_losses}
    plot_losses(curves, out / "losses.png")
    command = "python benchmarks/world/train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "training.json").write_text(json.dumps({
        "command": command.strip(), "args": {k: _shown(v) for k, v in vars(args).items()},
        "seconds_this_run": round(time.time() - started),
        **{f"final_{name}_loss": float(np.mean(losses[-50:])) for name, losses in curves.items()},
        "torch": torch.__version__,
    }, indent=2) + "\n")
    print(f"weights written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
