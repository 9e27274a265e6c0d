"""The GPU memory check of the One-Shot Tuner, DDIM Inverter and Temporal Sampler, with a faked free-memory figure.

No GPU here: the tests tell the nodes their device is CUDA and how much of it is free; the check must stop
the run before the model moves to that device (which would fail on this machine)."""
import logging

import pytest
import torch

from tests.comfy_pack import pack_module
from tests.test_nodes import node, synthetic_pose
from tests.tiny_models import TEXT_WIDTH, tiny_controlnet, tiny_unet

GiB = 2**30


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def handle():
    model = pack_module("posecrafter.model").PoseCrafterModel(tiny_unet(), tiny_controlnet())
    return pack_module("nodes.model_nodes").ModelHandle.untuned(model, {})


@pytest.fixture
def on_cuda(monkeypatch):
    """The nodes see a CUDA device with 6 GiB free; moving the model there fails the test."""
    comfy = pack_module("nodes._comfy")
    monkeypatch.setattr(comfy, "torch_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(comfy, "free_gpu_memory", lambda device: 6 * GiB)

    def no_work(self, device):
        raise AssertionError(f"the model was moved to {device}: the check did not stop the run")

    monkeypatch.setattr(pack_module("nodes.model_nodes").ModelHandle, "activate", no_work)


def inputs(frames, size=64):
    latent = {"samples": torch.randn(frames, 4, size // 8, size // 8)}
    return latent, synthetic_pose(frames, size, size), [[torch.randn(1, 77, TEXT_WIDTH), {}]]


def test_tuner_stops_before_its_first_step_and_says_what_saves_memory(handle, on_cuda, monkeypatch):
    """Faked estimates (GiB by setting): the message gives the need, the free memory and every saving."""
    def tuning_peak(frames, height, width, update_rule, gradient_checkpointing, dtype):
        assert (frames, height, width) == (3, 64, 64)
        return int((12 - 5 * gradient_checkpointing - 2 * (dtype != torch.float32) - 1 * (update_rule == "clean")) * GiB)

    monkeypatch.setattr(pack_module("posecrafter.memory"), "tuning_peak", tuning_peak)
    latent, pose, conditioning = inputs(3)
    with pytest.raises(pack_module("nodes.common").NotEnoughGPUMemory) as stopped:
        node("PoseCrafterOneShotTuner").tune(handle, latent, pose, conditioning, 1, 0.0, "paper", 0, False)
    message = str(stopped.value)
    assert "PoseCrafter tuning needs about 13.7 GiB of GPU memory (estimate 12.0 GiB + margin 1.7 GiB)" in message
    assert "6.0 GiB are free on cuda" in message and "stopped before the first step" in message
    assert "turn on gradient_checkpointing: -5.5 GiB;" in message
    assert "Model Loader dtype bf16: -2.2 GiB;" in message and "update_rule clean: -1.1 GiB;" in message
    assert "all of these: -8.8 GiB (then it fits)" in message


def test_sampler_suggests_windows_and_cfg_1(handle, on_cuda, monkeypatch):
    def sampling_peak(frames, height, width, guidance_scale, context_length, context_overlap, dtype):
        windows = 1 if context_length is None else 4
        return int((2 + 0.5 * frames / windows * guidance_scale) * (1 if dtype == torch.float32 else 0.5) * GiB)

    monkeypatch.setattr(pack_module("posecrafter.memory"), "sampling_peak", sampling_peak)
    latent, pose, conditioning = inputs(21)
    pose = node("PoseCrafterPoseInserter").insert(pose[1:], pose[:1], 0)[0]
    latent = {"samples": latent["samples"], "posecrafter_inversion_steps": 2}
    with pytest.raises(pack_module("nodes.common").NotEnoughGPUMemory, match=(
            r"PoseCrafter sampling needs about .* What saves memory: context_length 16: -\d+\.\d GiB; "
            r"cfg 1 \(no negative pass\): -\d+\.\d GiB; Model Loader dtype fp16")):
        node("PoseCrafterTemporalSampler").sample(handle, latent, pose, conditioning, 2, 2.0, 1.0, 0, 4, True,
                                                  negative=conditioning)


def test_inverter_check_runs_the_real_estimator(handle, on_cuda, monkeypatch):
    """fp32 SD1.5 inversion at 512 px (about 4.9 GiB + margin) does not fit 5 GiB; fp16 weights would."""
    monkeypatch.setattr(pack_module("nodes._comfy"), "free_gpu_memory", lambda device: 5 * GiB)
    latent, pose, conditioning = inputs(1, size=512)
    with pytest.raises(pack_module("nodes.common").NotEnoughGPUMemory,
                       match=r"DDIM inversion needs about 5\.\d GiB .* Model Loader dtype fp16: -2\.\d GiB \(then it fits\)"):
        node("PoseCrafterDDIMInverter").invert(handle, latent, pose, conditioning, 50)


def test_the_check_never_runs_on_a_cpu(handle, monkeypatch):
    def no_estimate(*args, **kwargs):
        raise AssertionError("estimated on a CPU")

    monkeypatch.setattr(pack_module("posecrafter.memory"), "tuning_peak", no_estimate)
    latent, pose, conditioning = inputs(2)
    tuned, _ = node("PoseCrafterOneShotTuner").tune(handle, latent, pose, conditioning, 1, 0.0, "clean", 0, False)
    assert tuned.info["steps"] == 1


def test_a_failing_estimate_is_logged_and_the_run_goes_on(caplog, monkeypatch):
    common = pack_module("nodes.common")
    monkeypatch.setattr(pack_module("nodes._comfy"), "free_gpu_memory", lambda device: GiB)

    def broken():
        raise RuntimeError("an operator fake tensors do not know")

    with caplog.at_level(logging.WARNING, logger="PoseCrafter"):
        assert common.check_gpu_memory(torch.device("cuda"), "PoseCrafter tuning", broken, {}) is None
    assert "could not estimate the GPU memory of PoseCrafter tuning (RuntimeError: an operator" in caplog.text
