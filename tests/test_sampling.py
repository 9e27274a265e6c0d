"""DDIM sampling and inversion (spec 4, 8.3) against diffusers' own pipeline and schedulers."""
import copy

import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline

from posecrafter.inversion import invert
from posecrafter.model import LATENT_SCALE, PoseCrafterModel, to_model_space
from posecrafter.sampling import sample, temporal_windows
from posecrafter.schedulers import MAX_STEPS, check_steps, ddim_inverse_scheduler, ddim_scheduler
from posecrafter.skeleton import SkeletonVideo, render_skeletons
from tests.tiny_models import random_poses, randomize_temporal, tiny_controlnet, tiny_unet, tiny_vae, video_inputs

STEPS = 10


@pytest.fixture(scope="module")
def models():
    unet, controlnet = tiny_unet(), tiny_controlnet()
    stock = (copy.deepcopy(unet), copy.deepcopy(controlnet))
    return stock, PoseCrafterModel(unet, controlnet)


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_one_frame_sampling_equals_the_diffusers_controlnet_pipeline(models, guidance):
    (stock_unet, stock_controlnet), model = models
    pipe = StableDiffusionControlNetPipeline(
        vae=tiny_vae(), text_encoder=None, tokenizer=None, unet=stock_unet, controlnet=stock_controlnet,
        scheduler=ddim_scheduler(STEPS), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    latents, poses, text = video_inputs(1, seed=4)
    negative = torch.randn(1, 77, text.shape[-1], generator=torch.Generator().manual_seed(9))
    reference = pipe(
        prompt_embeds=text, negative_prompt_embeds=negative, image=poses, height=64, width=64,
        num_inference_steps=STEPS, guidance_scale=guidance, eta=0.0, latents=to_model_space(latents),
        output_type="latent", controlnet_conditioning_scale=1.0,
    ).images
    ours = sample(model, latents, poses, text, negative, steps=STEPS, guidance_scale=guidance)
    assert (to_model_space(ours) - reference).abs().max() <= 1e-4


def _reference_inversion(stock_unet, stock_controlnet, latent, pose, text):
    scheduler = ddim_inverse_scheduler(STEPS)
    z = to_model_space(latent)
    trajectory = [z]
    with torch.no_grad():
        for t in scheduler.timesteps:
            down, mid = stock_controlnet(z, t, encoder_hidden_states=text, controlnet_cond=pose, return_dict=False)
            noise = stock_unet(z, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                               mid_block_additional_residual=mid).sample
            z = scheduler.step(noise, t, z).prev_sample
            trajectory.append(z)
    return torch.cat(trajectory) / LATENT_SCALE


def test_inversion_equals_a_reference_built_on_ddim_inverse_scheduler(models):
    (stock_unet, stock_controlnet), model = models
    latent, pose, text = video_inputs(1, seed=5)
    ours = invert(model, latent, pose, text, steps=STEPS)
    reference = _reference_inversion(stock_unet, stock_controlnet, latent, pose, text)
    assert ours.latents.shape == (STEPS + 1, 4, 8, 8)
    assert (ours.latents - reference).abs().max() <= 1e-4
    assert ours.timesteps == list(range(1, 1000, 100))
    assert torch.equal(ours.latent_at(ours.timesteps[-1]), ours.final[0])


def test_the_largest_step_count_stays_on_the_noise_schedule():
    """steps_offset=1 shifts the grid up by one: MAX_STEPS must still start inside the 1000-step schedule, and
    one step more is refused with a message rather than an IndexError deep inside the scheduler."""
    z, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    sampler, inverter = ddim_scheduler(MAX_STEPS), ddim_inverse_scheduler(MAX_STEPS)
    assert sampler.timesteps[0] == 999 and inverter.timesteps[-1] == 999
    assert torch.isfinite(sampler.step(noise, sampler.timesteps[0], z).prev_sample).all()
    assert torch.isfinite(inverter.step(noise, inverter.timesteps[-1], z).prev_sample).all()
    with pytest.raises(ValueError, match=f"between 1 and {MAX_STEPS}"):
        check_steps(MAX_STEPS + 1)


def test_inverse_step_follows_the_spec_formula():
    """Spec 4: eps at the next timestep, x0 from the current level (alpha_0 below t=0), then re-noise."""
    scheduler = ddim_inverse_scheduler(STEPS)
    z, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    alphas = scheduler.alphas_cumprod
    for t in (1, 101):
        previous = t - 1000 // STEPS
        alpha_prev = alphas[previous] if previous >= 0 else alphas[0]
        x0 = (z - (1 - alpha_prev).sqrt() * noise) / alpha_prev.sqrt()
        expected = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * noise
        assert torch.allclose(scheduler.step(noise, torch.tensor(t), z).prev_sample, expected, atol=1e-5)


def test_invert_then_sample_returns_close_to_the_input():
    # DDIM inversion is exact only when the noise prediction varies slowly along the path. A random tiny UNet
    # predicts noise unrelated to its input, so its output layer is damped (eps std about 0.005) to stand in
    # for a smooth trained model. Measured: max error 0.052 on latents of std 4.9.
    model = PoseCrafterModel(tiny_unet(), tiny_controlnet())
    with torch.no_grad():
        model.unet.conv_out.weight.mul_(0.02)
        model.unet.conv_out.bias.mul_(0.02)
    latent, pose, text = video_inputs(1, seed=6)
    inversion = invert(model, latent, pose, text, steps=50)
    reconstructed = sample(model, inversion.final, pose, text, steps=50)
    error = (reconstructed - latent).abs().max().item()
    assert error < 0.08, error
    # Starting one noise level off (a timestep-indexing bug) is far outside that bound.
    off_by_one = sample(model, inversion.latents[-2:-1], pose, text, steps=50)
    assert (off_by_one - latent).abs().max().item() > 0.5


def test_inverting_one_frame_equals_inverting_it_replicated(models):
    _, model = models
    model = copy.deepcopy(model)
    randomize_temporal(model, seed=11)
    latent, pose, text = video_inputs(1, seed=7)
    single = invert(model, latent, pose, text, steps=STEPS).final
    scheduler = ddim_inverse_scheduler(STEPS)
    z = to_model_space(latent).repeat(4, 1, 1, 1)
    with torch.no_grad():
        for t in scheduler.timesteps:
            z = scheduler.step(model(z, t, text, pose.repeat(4, 1, 1, 1), num_frames=4), t, z).prev_sample
    assert (z / LATENT_SCALE - single).abs().max() <= 1e-4


def test_windows_cover_every_frame_with_the_key_frame_in_each():
    windows = temporal_windows(num_frames=21, key_index=0, context_length=8, context_overlap=2)
    assert [w[1] for w in windows] == [1, 7, 13]
    assert all(len(w) == 9 and w[0] == 0 for w in windows)
    assert set().union(*windows) == set(range(21))
    assert temporal_windows(9, 0, 8, 2) == [list(range(9))]
    assert temporal_windows(6, 2, 3, 1) == [[0, 1, 2, 3], [2, 3, 4, 5]]  # the key frame 2 is in both


def test_progress_reports_each_steps_ddim_prediction_of_the_clean_frames(models):
    """The callback's latents (live previews) are DDIM's x0: with eta 0, x_{t-1} = sqrt(a') x0 + sqrt(1-a') eps
    where eps = (x_t - sqrt(a) x0) / sqrt(1-a)."""
    _, model = models
    latents, poses, text = video_inputs(3, seed=10)
    states, reports = [], []
    out = sample(model, latents, poses, text, steps=STEPS,
                 step_hook=lambda index, t, x: states.append((t, x.clone())) or x,
                 callback=lambda done, total, denoised: reports.append((done, total, denoised)))
    assert [(done, total) for done, total, _ in reports] == [(i + 1, STEPS) for i in range(STEPS)]
    alphas = ddim_scheduler(STEPS).alphas_cumprod
    following = [x for _, x in states[1:]] + [to_model_space(out)]
    for (t, x_t), x_prev, (_, _, denoised) in zip(states, following, reports):
        x0 = to_model_space(denoised)
        a, a_prev = alphas[t], alphas[max(t - 1000 // STEPS, 0)]
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        torch.testing.assert_close(x_prev, a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, atol=1e-4, rtol=1e-4)


def test_one_window_covering_the_video_equals_the_plain_path(models):
    _, model = models
    latents, poses, text = video_inputs(5, seed=8)
    plain = sample(model, latents, poses, text, steps=STEPS)
    windowed = sample(model, latents, poses, text, steps=STEPS, context_length=4, context_overlap=1)
    assert torch.equal(plain, windowed)


class _RecordingSkeletonVideo(SkeletonVideo):
    def __init__(self, *args):
        super().__init__(*args)
        self.requests = []

    def __getitem__(self, frames):
        self.requests.append(list(frames))
        return super().__getitem__(frames)


def test_windows_drawn_on_demand_give_bit_identical_results_and_only_a_window_is_drawn(models):
    """Item 2 of issue 12: the sampler given the keypoints (a SkeletonVideo) returns exactly what it returns
    for the pre-rendered images, and asks for one window's frames at a time, never the whole video."""
    _, model = models
    model = copy.deepcopy(model)
    randomize_temporal(model, seed=14)
    latents, _, text = video_inputs(9, seed=15)
    negative = torch.randn(text.shape, generator=torch.Generator().manual_seed(3))
    poses = random_poses(9, 64, 64, seed=16)
    options = dict(steps=3, guidance_scale=2.5, key_index=2, context_length=4, context_overlap=1)
    rendered = sample(model, latents, render_skeletons(poses, 64, 64), text, negative, **options)
    on_demand = _RecordingSkeletonVideo(poses, 64, 64)
    assert torch.equal(sample(model, latents, on_demand, text, negative, **options), rendered)
    windows = temporal_windows(9, 2, 4, 1)
    assert len(windows) == 3 and on_demand.requests == windows * 3


@pytest.mark.parametrize("fuse", ["uniform", "triangular"])
def test_one_windowed_step_is_the_spec_fusion_of_the_windows_predictions(models, fuse):
    """Spec 8.3, recomputed by hand for one DDIM step: each window (reference + 3 targets, overlap 1) predicts
    noise for its frames; a target's noise is the mean over its windows, uniform or weighted by the triangle
    min(j+1, n-j) of its place j among the window's n targets; the reference's is the uniform mean of all.
    Windows of 4 targets overlapping by 2 give frames 3 and 4 different triangle weights in their windows."""
    _, model = models
    model = copy.deepcopy(model)
    randomize_temporal(model, seed=12)
    latents, poses, text = video_inputs(8, seed=9)
    windows = [[0, 1, 2, 3, 4], [0, 3, 4, 5, 6], [0, 4, 5, 6, 7]]
    assert temporal_windows(8, 0, 4, 2) == windows
    scheduler = ddim_scheduler(1)
    t = scheduler.timesteps[0]
    x = to_model_space(latents)
    total, weight = torch.zeros_like(x), torch.zeros(8, 1, 1, 1)
    with torch.no_grad():
        for window in windows:
            noise = model(x[window], t, text, poses[window], num_frames=5, key_index=0)
            for j, frame in enumerate(window):  # j - 1 is the place among the 4 targets
                w = 1.0 if frame == 0 or fuse == "uniform" else float(min(j, 4 - (j - 1)))
                total[frame] += w * noise[j]
                weight[frame] += w
    expected = scheduler.step(total / weight, t, x).prev_sample
    out = sample(model, latents, poses, text, steps=1, context_length=4, context_overlap=2, fuse=fuse)
    assert (to_model_space(out) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("guidance, context_length", [(1.0, None), (3.0, None), (1.0, 3)])
def test_the_key_frame_may_sit_anywhere(models, guidance, context_length):
    """With the reference inserted at position k, sampling equals sampling with it moved to the front: only
    which frame is the key frame matters (temporal attention has no positions, the norms pool all frames)."""
    _, model = models
    model = copy.deepcopy(model)
    randomize_temporal(model, seed=13)
    latents, poses, text = video_inputs(6, seed=11)
    negative = torch.randn(text.shape, generator=torch.Generator().manual_seed(2))
    key = 2
    order = [key] + [i for i in range(6) if i != key]
    options = dict(steps=3, guidance_scale=guidance, context_length=context_length, context_overlap=1)
    at_k = sample(model, latents, poses, text, negative, key_index=key, **options)
    in_front = sample(model, latents[order], poses[order], text, negative, key_index=0, **options)
    assert (at_k[order] - in_front).abs().max() <= 1e-4


@pytest.mark.parametrize("fuse", ["uniform", "triangular"])
def test_several_windows_each_see_the_reference_as_frame_zero(models, fuse):
    _, model = models
    model = copy.deepcopy(model)
    randomize_temporal(model, seed=12)
    latents, poses, text = video_inputs(8, seed=9)
    calls = []

    def record(module, args, kwargs):
        calls.append((args[0].clone(), kwargs.get("key_index", args[5] if len(args) > 5 else 0)))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    out = sample(model, latents, poses, text, steps=3, context_length=3, context_overlap=1, fuse=fuse)
    handle.remove()
    assert torch.isfinite(out).all()
    windows_per_step = len(temporal_windows(8, 0, 3, 1))
    assert windows_per_step == 3 and len(calls) == 3 * windows_per_step
    for step in range(3):
        step_calls = calls[step * windows_per_step:(step + 1) * windows_per_step]
        for window_latents, key_index in step_calls:
            assert key_index == 0 and window_latents.shape[0] == 4
            assert torch.equal(window_latents[0], step_calls[0][0][0])  # the same reference latent
    assert torch.equal(calls[0][0][0], to_model_space(latents[0]))
    plain = sample(model, latents, poses, text, steps=3)
    assert (out - plain).abs().max() > 1e-4  # windows really changed what frames attend to


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(guidance_scale=0.5), "guidance_scale must be >= 1"),
        (dict(guidance_scale=3.0), "needs negative conditioning"),
        (dict(context_length=4, context_overlap=4), "context_overlap"),
        (dict(key_index=3), "key_index 3 is outside"),
    ],
)
def test_bad_sampling_options_are_explained(models, kwargs, message):
    _, model = models
    latents, poses, text = video_inputs(3)
    with pytest.raises(ValueError, match=message):
        sample(model, latents, poses, text, steps=2, **kwargs)


def test_bad_inputs_are_explained(models):
    _, model = models
    latents, poses, text = video_inputs(3)
    with pytest.raises(ValueError, match="latents have 3 frames but pose_images has 2"):
        sample(model, latents, poses[:2], text, steps=2)
    with pytest.raises(ValueError, match="zero frames"):
        sample(model, latents[:0], poses[:0], text, steps=2)
    with pytest.raises(ValueError, match="multiples of 8"):
        sample(model, latents, poses[..., :60], text, steps=2)
    with pytest.raises(ValueError, match="1024 wide.*SD1.5 uses the CLIP-L"):
        sample(model, latents, poses, torch.randn(1, 77, 1024), steps=2)
