"""Peak GPU memory of tuning, DDIM inversion and sampling, before they run (README "GPU memory").

The estimate runs our own loops (:class:`~posecrafter.tuning.OneShotTuner`, :func:`~posecrafter.inversion.invert`,
:func:`~posecrafter.sampling.sample`) on the full-size SD1.5 UNet + OpenPose ControlNet built from the shipped
configs, every device tensor a PyTorch fake tensor: shapes, dtypes and the operations run are real, no value
is computed and no GPU is needed. :class:`StorageTracker` watches every operation and adds up the bytes of the
storages alive at each moment (weights, gradients, optimizer state, autocast's weight copies, activations
saved for the backward pass, the fused attention kernel's output and log-sum-exp), each rounded up to the
512-byte blocks of PyTorch's CUDA caching allocator: the peak is what ``torch.cuda.max_memory_allocated``
would report. Nothing here is a formula: a change to the code changes the estimate.

The fake tensors sit on a pretend *CPU* device: on a PyTorch built without CUDA, autograd cannot record an
operation on a fake CUDA tensor (it asks the missing CUDA device guard for a stream), and the estimate must
give the same number everywhere. What our loops do differently on CUDA is set as they set it there: fp16
autocast for fp32 frozen weights while tuning and the multi-tensor (foreach) AdamW; the fused attention
kernel on the CPU (flash attention) keeps an fp32 log-sum-exp per query as the CUDA flash and
memory-efficient kernels do. GradScaler (the "clean" rule's loss scaling) only keeps scalars.

What it cannot see, and the margin :func:`with_margin` adds for it: the caching allocator's fragmentation
and its unsplit blocks, cuBLAS/cuDNN workspaces and other scratch memory kernels allocate inside
themselves. The CUDA context and loaded kernels are outside PyTorch's allocator and already missing from
the free memory the check compares with. The margin is 10% of the estimate plus 0.5 GiB;
``benchmarks/gpu.sh`` prints the estimate beside every measured peak, to calibrate it.

Where the loops branch on a value (the tuner's "all gradients finite?"), a fake value takes the ordinary
path: every gradient is finite and every step is taken.

Speed: 0.25-0.4 ms of CPU an operation whatever the tensor sizes, two thirds of it in PyTorch's fake-tensor
dispatch (a "paper" tuning estimate runs 46,000 operations, the "clean" rule 19,000). The estimates run one
or two steps (:func:`tune_as_on_cuda`, :func:`invert_steps`, :func:`sample_steps` say why, and what later
steps add), are cached per setting and share one fake model per dtype; ``benchmarks/estimates.py`` times them.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from typing import Callable

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .inversion import invert
from .loading import OPENPOSE_CONTROLNET_CONFIG, SD15_UNET_CONFIG
from .model import PoseCrafterModel
from .sampling import sample
from .tuning import ADAMW_OPTIONS, CLIP_FRAMES, OneShotTuner, TrainingClip

ALLOCATION_BLOCK = 512  # bytes: the CUDA caching allocator rounds every allocation up to a multiple of this
MARGIN_FRACTION = 0.10
MARGIN_BYTES = 2**29  # 0.5 GiB
TEXT_TOKENS = 77
GiB = 2**30
_DEVICE = torch.ops.prim.device.default
_ITEM = torch.ops.aten._local_scalar_dense.default


def with_margin(estimate: int) -> int:
    """The estimate plus the margin for what it cannot see (module docstring)."""
    return int(estimate * (1 + MARGIN_FRACTION)) + MARGIN_BYTES


class StorageTracker(TorchDispatchMode):
    """Live and peak bytes of storages, watched at the dispatcher.

    Every tensor an operation returns is looked at; a storage not seen before is counted (rounded up to
    ``block`` bytes) until Python frees it; ``add`` counts tensors made before (the weights). What counts:
    the fake tensors of ``fake_mode`` (the pretend GPU), or without one the real tensors on ``device_type``.
    Under a ``fake_mode``, operations on real tensors alone stay real (schedulers, random frame indices), and
    ``.item()`` or ``bool()`` of a fake tensor answers True for a bool tensor, else 0 (module docstring).
    """

    def __init__(self, fake_mode: FakeTensorMode | None = None, device_type: str = "cpu", block: int = ALLOCATION_BLOCK):
        super().__init__()
        self.fake_mode, self.device_type, self.block = fake_mode, device_type, block
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self.current = 0
        self.peak = 0

    def add(self, tensors) -> None:
        for tensor in tensors:
            self._track(tensor)

    def _counts(self, tensor) -> bool:
        if self.fake_mode is not None:
            return isinstance(tensor, FakeTensor)
        return isinstance(tensor, torch.Tensor) and tensor.device.type == self.device_type

    def _track(self, tensor) -> None:
        if not self._counts(tensor):
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = -(-storage.nbytes() // self.block) * self.block

        def free(_, key=key):
            self.current -= self._live.pop(key)[1]

        self._live[key] = (weakref.ref(storage, free), size)
        self.current += size
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.fake_mode is not None and FakeTensor not in types:  # no fake argument: real tensors stay real
            with unset_fake_temporarily():
                out = func(*args, **kwargs)
        elif func is _DEVICE:  # asked of most tensors of every operation: answered as the fake mode would
            return args[0].fake_device
        elif self.fake_mode is not None and func is _ITEM:
            return True if args[0].dtype == torch.bool else 0
        else:
            out = func(*args, **kwargs)
        for tensor in ((out,) if isinstance(out, torch.Tensor) else tree_leaves(out)):
            self._track(tensor)
        return out


def _fake_parameters(module: nn.Module, fake_mode: FakeTensorMode, device: torch.device) -> nn.Module:
    """Replace a meta-device module's parameters and buffers by fake tensors on ``device`` (shared ones stay shared)."""
    converted = {}
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, tensor in store.items():
                if tensor is None:
                    continue
                if tensor not in converted:
                    fake = fake_mode.fake_tensor_converter.from_meta_and_device(fake_mode, tensor.detach(), device)
                    converted[tensor] = nn.Parameter(fake, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else fake
                store[name] = converted[tensor]
    return module


def _meta_stock_models(unet_config: dict, controlnet_config: dict, dtype: torch.dtype):
    """diffusers' UNet and ControlNet of these configs on the meta device, weights in ``dtype`` (call under
    ``torch.device("meta")``)."""
    unet = UNet2DConditionModel.from_config(unet_config)
    controlnet = ControlNetModel.from_config(controlnet_config)
    for part in (unet, controlnet):
        for param in part.parameters():
            param.data = param.data.to(dtype)
    return unet, controlnet


def fake_stock_models(unet_config: dict, controlnet_config: dict, dtype: torch.dtype,
                      fake_mode: FakeTensorMode) -> tuple[UNet2DConditionModel, ControlNetModel]:
    """The UNet and ControlNet of these diffusers configs as fake tensors, as diffusers loads them (not inflated)."""
    with torch.device("meta"):
        unet, controlnet = _meta_stock_models(unet_config, controlnet_config, dtype)
    device = torch.device("cpu")
    return _fake_parameters(unet, fake_mode, device), _fake_parameters(controlnet, fake_mode, device)


def fake_model(unet_config: dict, controlnet_config: dict, dtype: torch.dtype, fake_mode: FakeTensorMode) -> PoseCrafterModel:
    """The inflated UNet + ControlNet of these diffusers configs as fake tensors, frozen weights in ``dtype``
    and the trainable set in fp32, as :meth:`PoseCrafterModel.from_files` loads them."""
    with torch.device("meta"):
        model = PoseCrafterModel(*_meta_stock_models(unet_config, controlnet_config, dtype))
    return _fake_parameters(model, fake_mode, torch.device("cpu"))


def full_size_configs() -> tuple[dict, dict]:
    """The diffusers configs of SD1.5's UNet and the OpenPose ControlNet (shipped in posecrafter/configs)."""
    return (UNet2DConditionModel.load_config(str(SD15_UNET_CONFIG)),
            ControlNetModel.load_config(str(OPENPOSE_CONTROLNET_CONFIG)))


def full_size_model(dtype: torch.dtype, fake_mode: FakeTensorMode) -> PoseCrafterModel:
    """SD1.5's UNet and the OpenPose ControlNet (the shipped configs) as fake tensors."""
    return fake_model(*full_size_configs(), dtype, fake_mode)


class _Stop(Exception):
    """Raised from a loop's callback once the steps that decide the peak have run."""


def _stop_after(steps: int):
    def callback(done, *_):
        if done >= steps:
            raise _Stop

    return callback


def tune_as_on_cuda(model: PoseCrafterModel, frames: int, height: int, width: int, *, update_rule: str,
                    gradient_checkpointing: bool, steps: int = 2) -> tuple[tuple, Callable[[], None]]:
    """Two tuning steps on a clip of ``min(frames, 8)`` frames, as the tuner runs them on a CUDA device (fp16
    autocast for fp32 frozen weights, foreach AdamW). The first step creates the optimizer state and the
    "paper" rule's gradient buffers; every later step repeats the second (at 512 px, both rules, with and
    without checkpointing, fp32 and bf16: three steps peak exactly as two, one step 0.5-5 GiB lower)."""
    latents, poses, text = _inputs(model, frames, height, width)
    count = min(CLIP_FRAMES, frames)

    def run():
        tuner = OneShotTuner(model, latents, poses, text, update_rule=update_rule,
                             gradient_checkpointing=gradient_checkpointing)
        tuner.autocast = torch.autocast(model.device.type, dtype=torch.float16, enabled=model.dtype == torch.float32)
        tuner.optimizer = torch.optim.AdamW(tuner.trainable, lr=tuner.lr, foreach=True, **ADAMW_OPTIONS)
        try:
            for _ in range(steps):
                tuner.step(TrainingClip(list(range(count)), 500, torch.randn_like(latents[:count])))
        finally:
            tuner.close()

    return (latents, poses, text), run


def invert_steps(model: PoseCrafterModel, height: int, width: int, *, steps: int = 50,
                 run_steps: int = 2) -> tuple[tuple, Callable[[], None]]:
    """The first ``run_steps`` of a ``steps``-step DDIM inversion (every step does the same work; the trajectory
    kept grows by one latent a step, not counted: step 50 peaks 48 latents, 3 MiB at 512 px, above step 2)."""
    latent, pose, text = _inputs(model, 1, height, width)

    def run():
        try:
            invert(model, latent, pose, text, steps=steps, callback=_stop_after(run_steps))
        except _Stop:
            pass

    return (latent, pose, text), run


def sample_steps(model: PoseCrafterModel, frames: int, height: int, width: int, *, guidance_scale: float = 1.0,
                 context_length: int | None = None, context_overlap: int = 4, steps: int = 50,
                 run_steps: int = 1) -> tuple[tuple, Callable[[], None]]:
    """The first ``run_steps`` of sampling ``frames`` frames, all windows in each. Every later step does the same
    work and also holds the previous step's prediction of the clean frames, not counted: one fp32 latent a frame
    (64 KiB at 512 px); steps 2, 3 and 4 peak alike."""
    latents, poses, text = _inputs(model, frames, height, width)
    negative = torch.randn_like(text) if guidance_scale > 1 else None

    def run():
        try:
            sample(model, latents, poses, text, negative, steps=steps, guidance_scale=guidance_scale,
                   context_length=context_length, context_overlap=context_overlap, callback=_stop_after(run_steps))
        except _Stop:
            pass

    return (latents, poses, text, negative), run


def _inputs(model: PoseCrafterModel, frames: int, height: int, width: int):
    """Latents, pose images and a prompt embedding on the model's device (made where the caller's mode makes
    them: fake under a FakeTensorMode)."""
    latents = torch.randn(frames, 4, height // 8, width // 8, device=model.device)
    poses = torch.rand(frames, 3, height, width, device=model.device)
    text = torch.randn(1, TEXT_TOKENS, model.text_width, device=model.device)
    return latents, poses, text


Workload = Callable[[PoseCrafterModel], tuple[tuple, Callable[[], None]]]


def measure(model: PoseCrafterModel, workload: Workload, fake_mode: FakeTensorMode | None = None,
            device_type: str = "cpu", block: int = ALLOCATION_BLOCK) -> int:
    """Peak bytes while a workload runs (``workload(model)`` gives its inputs and the run), counting the
    model's weights and the inputs. With ``fake_mode``, the model is fake and the inputs are made fake."""
    with fake_mode if fake_mode is not None else contextlib.nullcontext():
        inputs, run = workload(model)
    tracker = StorageTracker(fake_mode, device_type, block)
    tracker.add([*model.parameters(), *model.buffers(), *inputs])
    with fake_mode if fake_mode is not None else contextlib.nullcontext(), tracker:
        run()
    return tracker.peak


@functools.lru_cache(maxsize=None)
def _shared_full_size_model(dtype: torch.dtype) -> tuple[PoseCrafterModel, FakeTensorMode]:
    """One fake full-size model per dtype for every estimate, built once: the loops leave it as they found it
    (the tuner's ``close``; tests/test_memory.py checks)."""
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    return full_size_model(dtype, fake_mode), fake_mode


_shared_model_lock = threading.Lock()  # the tuner changes the shared model while it runs


def _full_size_peak(dtype: torch.dtype, workload: Workload) -> int:
    with _shared_model_lock:
        model, fake_mode = _shared_full_size_model(dtype)
        return measure(model, workload, fake_mode)


@functools.lru_cache(maxsize=None)
def tuning_peak(frames: int, height: int, width: int, update_rule: str = "paper", gradient_checkpointing: bool = False,
                dtype: torch.dtype = torch.float32) -> int:
    """Peak GPU bytes of one-shot tuning on ``frames`` frames of ``width`` x ``height`` pixels (SD1.5 + OpenPose
    ControlNet, frozen weights in ``dtype``), without the margin."""
    return _full_size_peak(dtype, functools.partial(tune_as_on_cuda, frames=frames, height=height, width=width,
                                                    update_rule=update_rule,
                                                    gradient_checkpointing=gradient_checkpointing))


@functools.lru_cache(maxsize=None)
def inversion_peak(height: int, width: int, steps: int = 50, dtype: torch.dtype = torch.float32) -> int:
    """Peak GPU bytes of the DDIM inversion of one reference frame, without the margin."""
    return _full_size_peak(dtype, functools.partial(invert_steps, height=height, width=width, steps=steps))


@functools.lru_cache(maxsize=None)
def sampling_peak(frames: int, height: int, width: int, guidance_scale: float = 1.0, context_length: int | None = None,
                  context_overlap: int = 4, dtype: torch.dtype = torch.float32) -> int:
    """Peak GPU bytes of sampling ``frames`` frames (the inserted reference included), in windows of
    ``context_length`` + the reference when given, without the margin."""
    return _full_size_peak(dtype, functools.partial(sample_steps, frames=frames, height=height, width=width,
                                                    guidance_scale=guidance_scale, context_length=context_length,
                                                    context_overlap=context_overlap))
