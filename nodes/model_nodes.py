"""Loading the PoseCrafter model, one-shot tuning, and saving/loading the tuned weights."""
import os
import re

import torch

from ..posecrafter import memory
from ..posecrafter import model as pc_model
from ..posecrafter import tuning
from ..posecrafter.pose import from_pose_keypoint
from . import _comfy
from .common import (
    CATEGORY, LATENT_SCALE, MODEL_TYPE, check_frame_count, check_gpu_memory, latent_samples, pose_images_for,
    prompt_embeds, validation_result,
)
from .plot import loss_curve_image
from .pose_nodes import release_dwpose_sessions

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelHandle:
    """What a POSECRAFTER_MODEL socket carries.

    The heavy inflated UNet + ControlNet is loaded once and shared; each handle owns its own copy of
    the trainable tensors (the tuned attention weights, about 72 M values). A node activates a handle
    before running the model, so tuning never changes what an upstream node returned (ComfyUI caches
    node outputs and hands the same object to every consumer).
    """

    def __init__(self, model, trainable, info):
        self.model = model
        self.trainable = trainable
        self.info = info

    @classmethod
    def untuned(cls, model, info):
        return cls(model, _trainable_copy(model), info)

    def derived(self, **info):
        """A new handle holding the shared model's current trainable tensors, with extra info."""
        return ModelHandle(self.model, _trainable_copy(self.model), {**self.info, **info})

    def activate(self, device):
        """Put this handle's trainable tensors into the shared model and move it to `device`."""
        with torch.inference_mode(False), torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, value in self.trainable.items():
                params[name].copy_(value)
        return _move(self.model, device)

    def offload(self):
        """Move the shared model back to ComfyUI's offload device."""
        _move(self.model, _comfy.offload_device())


def _move(module, device):
    # ComfyUI runs nodes under inference_mode, and weights moved there would become inference tensors
    # that can never be tuned again.
    with torch.inference_mode(False):
        return module.to(device)


def _trainable_copy(model):
    return {name: p.detach().to("cpu", copy=True) for name, p in model.trainable_parameters().items()}


def _resolve(kind, name, what):
    path = _comfy.find_model(kind, name)
    if path is None:
        raise ValueError(_comfy.missing_model_message(kind, name, what))
    return path


class ModelLoader:
    DESCRIPTION = (
        "Loads the SD1.5 UNet and the OpenPose ControlNet from your model folders and inflates them for "
        "video (key-frame attention and temporal attention). Text encoding and the VAE stay with ComfyUI's "
        "own CLIP Text Encode and VAE Encode/Decode."
    )
    CATEGORY = CATEGORY + "/loaders"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The video-inflated SD1.5 UNet and OpenPose ControlNet.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        checkpoints = _comfy.list_models("checkpoints") + [
            "diffusers/" + name for name in _comfy.list_models("diffusers", files=False, folders=True)
        ]
        return {
            "required": {
                "checkpoint": (checkpoints, {"tooltip": "SD1.5 checkpoint from models/checkpoints (a single .safetensors/.ckpt), or a diffusers folder from models/diffusers."}),
                "controlnet": (_comfy.list_models("controlnet", folders=True), {"tooltip": "The OpenPose ControlNet v1.1 for SD1.5 (control_v11p_sd15_openpose) from models/controlnet."}),
                "dtype": (list(DTYPES), {"default": "fp32", "tooltip": "Precision of the frozen weights (the tuned attention weights are always kept in fp32). fp16 or bf16 halve the weights' memory on a GPU (tuning with the paper rule still keeps an fp32 gradient buffer for them); keep fp32 on a CPU."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint=None, controlnet=None):
        # ComfyUI skips its own list check for the inputs named here (dtype keeps it), and reports a
        # returned message once per input named here, so the message says which file is missing.
        # Linked (non-widget) values are not known at validation time and arrive as None.
        problems = []
        if checkpoint is not None and _checkpoint_path(checkpoint) is None:
            problems.append(_comfy.missing_model_message("checkpoints", checkpoint, "checkpoint"))
        if controlnet is not None and _comfy.find_model("controlnet", controlnet) is None:
            problems.append(_comfy.missing_model_message("controlnet", controlnet, "ControlNet"))
        return "; ".join(problems) or True

    def load(self, checkpoint, controlnet, dtype):
        warning = slow_half_precision_warning(DTYPES[dtype], _comfy.torch_device())
        if warning:
            _comfy.log.warning(warning)
        # ComfyUI runs nodes under inference_mode; weights made there could never be tuned.
        with torch.inference_mode(False):
            model = pc_model.PoseCrafterModel.from_files(
                _checkpoint_path(checkpoint),
                _resolve("controlnet", controlnet, "ControlNet"),
                dtype=DTYPES[dtype],
                device=_comfy.offload_device(),
            )
        return (ModelHandle.untuned(model, {"base": checkpoint, "controlnet": controlnet}),)


def slow_half_precision_warning(dtype, device):
    """A warning when half-precision weights will run on a CPU without instructions for them (AVX-512 BF16 /
    AMX / AVX-512 FP16): there they run many times slower than fp32 (a bf16 matrix product measured 100x slower
    on an AVX2-only CPU). None otherwise."""
    if device.type != "cpu" or dtype == torch.float32:
        return None
    supported = (torch.ops.mkldnn._is_mkldnn_bf16_supported() if dtype == torch.bfloat16
                 else torch.ops.mkldnn._is_mkldnn_fp16_supported())
    if supported:
        return None
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    return (f"Model Loader: dtype {name} on this CPU, which has no {name} instructions, runs many times slower "
            f"than fp32 (a bf16 matrix product measured 100x slower); set the Model Loader's dtype to fp32 "
            f"(about 2.2 GiB more memory).")


def _checkpoint_path(name):
    path = _comfy.find_model("checkpoints", name)
    if path is None and name.startswith("diffusers/"):
        path = _comfy.find_model("diffusers", name[len("diffusers/"):])
    return path


class OneShotTuner:
    DESCRIPTION = (
        "One-shot tuning (the paper's training stage): fine-tunes the attention layers on the training clip "
        "so the generated video keeps this person and scene. Returns the tuned model and its loss curve."
    )
    CATEGORY = CATEGORY + "/tuning"
    RETURN_TYPES = (MODEL_TYPE, "IMAGE")
    RETURN_NAMES = ("model", "loss_curve")
    OUTPUT_TOOLTIPS = ("The tuned model.", "The training loss per step, plotted.")
    FUNCTION = "tune"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The model from PoseCrafter Model Loader (or an already tuned one)."}),
                "latent": ("LATENT", {"tooltip": "The training frames (Select Frames output) encoded by VAE Encode."}),
                "pose": ("POSE_KEYPOINT", {"tooltip": "The training frames' poses, one per frame (PoseCrafter DWPose Extractor or DWPreprocessor)."}),
                "conditioning": ("CONDITIONING", {"tooltip": "The source prompt describing the training clip, e.g. 'a person is dancing' (CLIP Text Encode)."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Training steps. 0 uses the paper's formula from the frame count (8 frames: 100 steps, 100 frames: 2000)."}),
                "learning_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 1e-6, "round": False, "tooltip": "0 uses the default of the update rule (paper: 3e-3, clean: 3e-5)."}),
                "update_rule": (["paper", "clean"], {"default": "paper", "tooltip": "paper: reproduces the official code's update exactly (see README). clean: plain AdamW on the trained weights only, with a smaller learning rate."}),
                # No control widget: the frontend adds one to any INT named "seed" unless this is False,
                # set to 'randomize' on a new node, and every queue would then tune again from scratch.
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": False, "tooltip": "Seed for the frame clips, timesteps and noise drawn at each step. Tuning re-runs only when it (or another tuning input) changes."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": False, "tooltip": "Recompute activations in the backward pass: less GPU memory, slower."}),
            }
        }

    def tune(self, model, latent, pose, conditioning, steps, learning_rate, update_rule, seed, gradient_checkpointing):
        latents = latent_samples(latent, "latent")
        frames = latents.shape[0]
        poses = from_pose_keypoint(pose, "pose")
        check_frame_count(len(poses), frames, "pose", "latent")
        embeds = prompt_embeds(conditioning, "conditioning", model.model.text_width)
        _comfy.free_memory_for_heavy_work()
        release_dwpose_sessions()
        device = _comfy.torch_device()
        check_gpu_memory(device, "PoseCrafter tuning", *_tuning_estimates(
            frames, latents.shape[-2] * LATENT_SCALE, latents.shape[-1] * LATENT_SCALE, update_rule,
            gradient_checkpointing, model.model.dtype))
        progress = _comfy.Progress(steps or tuning.paper_steps(frames), "PoseCrafter tuning")

        def callback(step, loss):
            progress.update(step, loss=f"{loss:.4f}")

        module = model.activate(device)
        try:
            # ComfyUI runs nodes under inference_mode; training needs autograd and tensors made outside it.
            with torch.inference_mode(False), torch.enable_grad():
                result = tuning.tune(
                    module,
                    latents.clone().to(device),
                    pose_images_for(poses, latents, device),  # each step's clip drawn when it runs
                    embeds.clone().to(device),
                    steps=steps or None,
                    lr=learning_rate or None,
                    update_rule=update_rule,
                    seed=seed,
                    gradient_checkpointing=gradient_checkpointing,
                    callback=callback,
                )
            tuned = model.derived(frames=frames, steps=result.steps, lr=result.lr, update_rule=update_rule, seed=seed)
        finally:
            progress.close()
            model.activate(_comfy.offload_device())  # the shared model goes back to the input's weights
            _comfy.empty_cache()
        _comfy.log.info("PoseCrafter tuning: %d steps, final loss %.4f", result.steps, result.losses[-1])
        return (tuned, loss_curve_image(result.losses, f"PoseCrafter tuning loss ({result.steps} steps)"))


def _tuning_estimates(frames, height, width, update_rule, gradient_checkpointing, dtype):
    """The tuning run's memory estimate, and the settings that lower it with theirs (for check_gpu_memory)."""
    settings = dict(update_rule=update_rule, gradient_checkpointing=gradient_checkpointing, dtype=dtype)

    def peak(**changes):
        return lambda: memory.tuning_peak(frames, height, width, **{**settings, **changes})

    fixes = {}
    if not gradient_checkpointing:
        fixes["turn on gradient_checkpointing"] = peak(gradient_checkpointing=True)
    if dtype == torch.float32:
        fixes["Model Loader dtype bf16"] = peak(dtype=torch.bfloat16)
    if update_rule == "paper":
        fixes["update_rule clean"] = peak(update_rule="clean")
    if len(fixes) > 1:
        fixes["all of these"] = peak(gradient_checkpointing=True, update_rule="clean",
                                     dtype=torch.bfloat16 if dtype == torch.float32 else dtype)
    return peak(), fixes


TUNED_SUFFIX = ".safetensors"
MAX_NAME_BYTES = 255  # the longest file name most file systems (ext4, APFS, NTFS in UTF-16 units) take
# What Windows, macOS or Linux file names cannot hold: folder separators, the characters Windows reserves, and
# control characters.
UNUSABLE_CHARACTERS = re.compile(r'[/\\<>:"|?*\x00-\x1f]')
RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def tuned_file_name(name):
    """The file name in models/posecrafter for the 'filename' widget: as typed (Unicode letters, spaces and
    all) with .safetensors at the end; a name no file system can take is refused, saying why."""
    stem = name.strip()
    if stem.lower().endswith(TUNED_SUFFIX):
        stem = stem[: -len(TUNED_SUFFIX)]
    if not stem:
        raise ValueError("'filename' is empty: type a name for the tuned weights, e.g. posecrafter_tuned")
    unusable = sorted(set(UNUSABLE_CHARACTERS.findall(stem)))
    if unusable:
        shown = " ".join(repr(c) for c in unusable)
        raise ValueError(
            f"'filename' contains {shown}, which file names cannot hold (the file always goes into models/posecrafter, "
            "so no folders either): use letters of any language, digits, spaces, '-', '_' or '.'"
        )
    if stem.startswith("."):
        raise ValueError("'filename' starts with '.', which makes a hidden file: start it with a letter or digit")
    if stem.split(".")[0].upper() in RESERVED_NAMES:
        raise ValueError(f"'filename' {stem!r} is a device name on Windows ({stem.split('.')[0].upper()}): choose "
                         "another name")
    size = len((stem + TUNED_SUFFIX).encode("utf-8"))
    if size > MAX_NAME_BYTES:
        room = MAX_NAME_BYTES - len(TUNED_SUFFIX)
        raise ValueError(
            f"'filename' is too long for a file name: {len(stem)} characters take {size - len(TUNED_SUFFIX)} bytes, and "
            f"file systems allow {room} plus '{TUNED_SUFFIX}' (a letter like é takes 2 bytes, 名 takes 3): shorten it"
        )
    return stem + TUNED_SUFFIX


class SaveTuned:
    DESCRIPTION = "Saves the tuned weights (only the trained tensors, about 290 MB) to models/posecrafter."
    CATEGORY = CATEGORY + "/tuning"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The tuned model from PoseCrafter One-Shot Tuner."}),
                "filename": ("STRING", {"default": "posecrafter_tuned", "tooltip": "File name in models/posecrafter (any language's letters; not / \\ : * ? \" < > |); .safetensors is added; an existing file of that name is replaced."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename=None):
        # A bad name is refused before the workflow tunes, not after; a linked name arrives as None.
        return filename is None or validation_result(lambda: tuned_file_name(filename))

    def save(self, model, filename):
        dirs = _comfy.model_dirs("posecrafter")
        if not dirs:
            raise ValueError("no models/posecrafter folder is configured (outside ComfyUI set POSECRAFTER_MODELS_DIR)")
        os.makedirs(dirs[0], exist_ok=True)
        path = os.path.join(dirs[0], tuned_file_name(filename))
        model.activate(_comfy.offload_device())
        metadata = {key: str(value) for key, value in model.info.items()}
        tuning.save_tuned(model.model, path, metadata=metadata)
        _comfy.log.info("PoseCrafter: saved tuned weights to %s", path)
        return {"ui": {"text": [path]}}


class LoadTuned:
    DESCRIPTION = "Loads tuned weights saved by PoseCrafter Save Tuned onto the same base model."
    CATEGORY = CATEGORY + "/tuning"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the tuned weights.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The base model from PoseCrafter Model Loader (the same checkpoint the weights were tuned on)."}),
                "tuned_weights": (_comfy.list_models("posecrafter"), {"tooltip": "A .safetensors file in models/posecrafter."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, tuned_weights=None):
        if tuned_weights is not None and _comfy.find_model("posecrafter", tuned_weights) is None:
            return (_comfy.missing_model_message("posecrafter", tuned_weights, "tuned weights")
                    + "; tune and save them first (PoseCrafter Save Tuned, as in posecrafter_one_shot.json)")
        return True

    @classmethod
    def IS_CHANGED(cls, tuned_weights=None, **_):
        # Save Tuned may overwrite a file of the same name: reload when the file changes.
        path = tuned_weights and _comfy.find_model("posecrafter", tuned_weights)
        return os.path.getmtime(path) if path else ""

    def load(self, model, tuned_weights):
        path = _resolve("posecrafter", tuned_weights, "tuned weights")
        module = model.activate(_comfy.offload_device())
        try:
            metadata = tuning.load_tuned(module, path)
            tuned = model.derived(**metadata, tuned_weights=tuned_weights)
        finally:
            model.activate(_comfy.offload_device())
        return (tuned,)


NODE_CLASS_MAPPINGS = {
    "PoseCrafterModelLoader": ModelLoader,
    "PoseCrafterOneShotTuner": OneShotTuner,
    "PoseCrafterSaveTuned": SaveTuned,
    "PoseCrafterLoadTuned": LoadTuned,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PoseCrafterModelLoader": "PoseCrafter Model Loader",
    "PoseCrafterOneShotTuner": "PoseCrafter One-Shot Tuner",
    "PoseCrafterSaveTuned": "PoseCrafter Save Tuned",
    "PoseCrafterLoadTuned": "PoseCrafter Load Tuned",
}
