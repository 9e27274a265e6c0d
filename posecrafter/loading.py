"""Loading the SD1.5 UNet and the OpenPose ControlNet from the user's own files, never from the network.

Accepted inputs:
- an SD1.5 single-file checkpoint in the original LDM layout (``.safetensors``, or ``.ckpt`` read with
  ``torch.load(weights_only=True)``), converted with diffusers' own LDM key map and the SD1.5 config
  shipped in ``posecrafter/configs``; its VAE, text encoder and EMA tensors are not read;
- an OpenPose ControlNet v1.1 file (``control_v11p_sd15_openpose.pth`` or the fp16 ``.safetensors``
  variants, with or without the ``control_model.`` prefix), or the v1.0 ``control_sd15_openpose.pth``
  (ControlNet and SD1.5 in one file, of which only the ``control_model.`` part is used), with the shipped
  ControlNet config;
- a diffusers-format folder (``config.json`` + weights, full precision or the ``fp16`` variant, or a
  pipeline folder with ``unet/``/``controlnet/``).

Every load is strict: missing or unexpected tensors and wrong shapes raise a ``ValueError`` that names the
file and says what it looks like.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint, convert_ldm_unet_checkpoint
from safetensors import SafetensorError, safe_open

CONFIG_DIR = Path(__file__).parent / "configs"
SD15_UNET_CONFIG = CONFIG_DIR / "sd15_unet"
OPENPOSE_CONTROLNET_CONFIG = CONFIG_DIR / "openpose_controlnet"

OPENPOSE_CONTROLNET_FILES = "control_v11p_sd15_openpose.pth or its .safetensors"  # v1.1, trained with hands and face
_LDM_UNET_PREFIX = "model.diffusion_model."
_LDM_CONTROLNET_PREFIX = "control_model."
_NOT_UNET_PREFIXES = ("first_stage_model.", "cond_stage_model.", "model_ema.")  # VAE, text encoder, EMA copy
# Full precision first: a folder holding both uses that one.
_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                 "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")


def read_state_dict(path: str | os.PathLike, keep=None) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors directly, pickled files only with ``weights_only=True``.
    ``keep`` picks, from the list of the file's tensor names, the ones to return (all by default);
    safetensors files read only those, pickles are read whole (the format cannot skip tensors)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        if path.suffix.lower() in (".safetensors", ".sft"):
            with safe_open(str(path), framework="pt") as handle:
                names = list(handle.keys())
                return {name: handle.get_tensor(name) for name in (keep(names) if keep else names)}
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as error:
        raise ValueError(
            f"{path.name} is not a readable checkpoint (truncated, or not a weights file at all): {error}. "
            "Download the file again, or convert it to .safetensors."
        ) from error
    except Exception as error:  # pickle refusing a non-tensor object under weights_only=True
        raise ValueError(
            f"{path.name} holds Python objects besides tensors, so it is not loaded (only safetensors or "
            f"tensor-only pickles are). Convert it to .safetensors. Detail: {error}"
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} is not a checkpoint: it does not hold a dictionary of tensors")
    return {name: state[name] for name in keep(list(state))} if keep else state


def _unet_part(names: list[str]) -> list[str]:
    """The tensors of a single-file SD checkpoint that a UNet load may need."""
    return [n for n in names if not n.startswith(_NOT_UNET_PREFIXES)]


def _controlnet_part(names: list[str]) -> list[str]:
    """A ControlNet v1.0 file holds the ControlNet (``control_model.``) and the whole SD1.5 model: only
    the former is read. A difference ControlNet is marked by a ``difference`` tensor, kept to name it."""
    if any(n.startswith(_LDM_CONTROLNET_PREFIX) for n in names):
        return [n for n in names if n.startswith(_LDM_CONTROLNET_PREFIX) or n == "difference"]
    return names


def _input_channels_kind(channels: int) -> str:
    """What a UNet with ``channels`` latent input channels (text-to-image SD has 4) is."""
    kind = {9: "an inpainting", 8: "an instruct-pix2pix"}.get(channels, "a")
    return f"{kind} model ({channels} input channels; text-to-image models have 4)"


def _unet_layout(state: dict[str, torch.Tensor], name: str) -> str:
    """``"ldm"`` for an original SD1.5 checkpoint, ``"diffusers"`` for a diffusers UNet saved as one file;
    a ValueError saying what the file looks like otherwise."""
    keys = state.keys()
    conv_in = state.get(_LDM_UNET_PREFIX + "input_blocks.0.0.weight", state.get("conv_in.weight"))
    if any(k.startswith("conditioner.embedders.") or k.startswith(_LDM_UNET_PREFIX + "label_emb") for k in keys):
        looks_like = "an SDXL checkpoint"
    elif any(k.removeprefix(_LDM_UNET_PREFIX).startswith(("double_blocks.", "joint_blocks.")) for k in keys):
        looks_like = "a Flux or SD3 checkpoint"
    elif any(k.startswith(_LDM_CONTROLNET_PREFIX) or k.startswith("input_hint_block.") for k in keys):
        looks_like = "a ControlNet, not a base model"
    elif conv_in is not None and conv_in.shape[1] != 4:
        looks_like = _input_channels_kind(conv_in.shape[1])
    elif any(k.startswith(_LDM_UNET_PREFIX) for k in keys):
        cross = state.get(_LDM_UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
        if cross is None or cross.shape[1] != 1024:
            return "ldm"
        looks_like = "an SD2.x checkpoint"
    elif "conv_in.weight" in keys and "time_embedding.linear_1.weight" in keys:
        return "diffusers"
    else:
        looks_like = "neither an SD1.5 checkpoint nor a diffusers UNet"
    raise ValueError(f"{name} looks like {looks_like}; PoseCrafter needs an SD1.5 text-to-image checkpoint")


def _strict_load(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, dtype, device):
    """Load ``state`` into a model built on the meta device, refusing any mismatch."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if state.get(k) is None)
    unexpected = sorted(k for k in state if k not in expected)
    wrong_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if state.get(k) is not None and state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if names:
                parts.append(f"{len(names)} {label} (e.g. {', '.join(names[:3])})")
        raise ValueError(
            f"{source} does not match the expected model: {'; '.join(parts)}. The file is truncated (download it "
            f"again), or it is another kind of model: PoseCrafter needs an SD1.5 checkpoint and {OPENPOSE_CONTROLNET_FILES}"
        )
    # Copied into tensors of their own: safetensors may hand out views into its file buffer at offsets that are
    # not 64-byte aligned, and CPU kernels then take other code paths (slower, and not bit-equal).
    state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
             for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _build_on_meta(model_class, config: dict):
    with torch.device("meta"):
        return model_class.from_config(config)


def _diffusers_files(path: Path, subfolder: str) -> tuple[Path, Path] | None:
    """The config.json and the weights file (full precision before the .fp16 variant) that a diffusers model
    folder, or a pipeline folder's ``subfolder``, is loaded from; None if there are none."""
    for folder in (path, path / subfolder):
        weights = next((folder / name for name in _WEIGHT_NAMES if (folder / name).is_file()), None)
        if (folder / "config.json").is_file() and weights is not None:
            return folder / "config.json", weights
    return None


def _check_sd15_config(config: dict, source: str):
    if config.get("addition_embed_type") == "text_time":
        raise ValueError(f"{source} looks like an SDXL model; PoseCrafter needs an SD1.5 model")
    if config.get("cross_attention_dim") == 1024:
        raise ValueError(f"{source} looks like an SD2.x model; PoseCrafter needs an SD1.5 model")
    if config.get("in_channels", 4) != 4:
        raise ValueError(
            f"{source} looks like {_input_channels_kind(config['in_channels'])}; "
            "PoseCrafter needs an SD1.5 text-to-image model"
        )


def _load_folder(path: Path, subfolder: str, model_class, dtype, device):
    """A diffusers-format model (config.json + weights) from ``path`` or ``path/subfolder``."""
    files = _diffusers_files(path, subfolder)
    if files is None:
        raise ValueError(
            f"{path} is not a diffusers model folder: it needs config.json and "
            f"diffusion_pytorch_model.safetensors, .bin or their .fp16 variant (directly or in a {subfolder}/ "
            "subfolder)"
        )
    config_file, weights = files
    config = model_class.load_config(str(config_file.parent))
    _check_sd15_config(config, str(path))
    return _strict_load(_build_on_meta(model_class, config), read_state_dict(weights), str(weights), dtype, device)


def load_unet(path: str | os.PathLike, dtype=torch.float32, device="cpu",
              config_dir: str | os.PathLike = SD15_UNET_CONFIG) -> UNet2DConditionModel:
    """The SD1.5 UNet from a single-file checkpoint (LDM layout, read with the config in ``config_dir``:
    the shipped SD1.5 one by default) or a diffusers folder (which carries its own config)."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, "unet", UNet2DConditionModel, dtype, device)
    state = read_state_dict(path, _unet_part)
    config = UNet2DConditionModel.load_config(str(config_dir))
    if _unet_layout(state, path.name) == "ldm":
        ldm_count = sum(k.startswith(_LDM_UNET_PREFIX) for k in state)
        state = convert_ldm_unet_checkpoint(state, config)
        if len(state) != ldm_count:
            raise ValueError(
                f"{path.name}: {ldm_count} UNet tensors in the file but {len(state)} map to SD1.5; "
                "it is not a standard SD1.5 checkpoint"
            )
    return _strict_load(_build_on_meta(UNet2DConditionModel, config), state, path.name, dtype, device)


def load_controlnet(path: str | os.PathLike, dtype=torch.float32, device="cpu",
                    config_dir: str | os.PathLike = OPENPOSE_CONTROLNET_CONFIG) -> ControlNetModel:
    """The OpenPose ControlNet from its original v1.1 or v1.0 file (with or without the ``control_model.``
    prefix, read with the config in ``config_dir``) or a diffusers folder."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, "controlnet", ControlNetModel, dtype, device)
    state = read_state_dict(path, _controlnet_part)
    if "difference" in state:
        raise ValueError(
            f"{path.name} is a difference ControlNet (it stores changes to SD1.5 weights, not the ControlNet "
            "itself); merge it with SD1.5 first, or use the full OpenPose ControlNet "
            "(control_v11p_sd15_openpose_fp16.safetensors)"
        )
    if any(k.startswith(_LDM_UNET_PREFIX) for k in state):
        raise ValueError(f"{path.name} looks like a base model checkpoint, not a ControlNet: choose the OpenPose "
                         f"ControlNet ({OPENPOSE_CONTROLNET_FILES}) as the ControlNet")
    if any("label_emb" in k for k in state):
        raise ValueError(f"{path.name} looks like an SDXL ControlNet; PoseCrafter needs the SD1.5 OpenPose ControlNet")
    hint_key = next((k for k in state if k.endswith("input_hint_block.0.weight")), None)
    if hint_key is None and "controlnet_cond_embedding.conv_in.weight" not in state:
        raise ValueError(f"{path.name} is not a ControlNet checkpoint (no hint encoder found): choose the OpenPose "
                         f"ControlNet ({OPENPOSE_CONTROLNET_FILES}) as the ControlNet")
    config = ControlNetModel.load_config(str(config_dir))
    cross = next((v for k, v in state.items() if k.endswith("transformer_blocks.0.attn2.to_k.weight")), None)
    if cross is not None and cross.shape[1] != config["cross_attention_dim"]:
        raise ValueError(
            f"{path.name} is a ControlNet for a model with {cross.shape[1]}-wide text embeddings (SD2.x uses 1024); "
            "PoseCrafter needs the SD1.5 OpenPose ControlNet"
        )
    if hint_key is not None:
        ldm_count = len(state)
        state = {
            (k[len(_LDM_CONTROLNET_PREFIX):] if k.startswith(_LDM_CONTROLNET_PREFIX) else k): v
            for k, v in state.items()
        }
        state = convert_controlnet_checkpoint(state, config)
        if sum(v is not None for v in state.values()) != ldm_count:
            raise ValueError(
                f"{path.name}: {ldm_count} tensors in the file but only "
                f"{sum(v is not None for v in state.values())} map to an SD1.5 ControlNet; the file is truncated "
                "or not a standard ControlNet v1.1 checkpoint"
            )
    return _strict_load(_build_on_meta(ControlNetModel, config), state, path.name, dtype, device)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: str | os.PathLike, subfolder: str = "unet") -> str:
    """SHA-256 of a weights file, or of the config and weights file that a diffusers folder (or a pipeline
    folder's ``subfolder``) is loaded from, and nothing else in it (cached per file version)."""
    path = Path(path)
    if path.is_dir():
        files = _diffusers_files(path, subfolder)
        if files is None:
            raise ValueError(f"{path} is not a diffusers model folder (no config.json with weights)")
        digest = hashlib.sha256()
        for file in files:
            digest.update(str(file.relative_to(path)).encode())
            digest.update(content_sha256(file).encode())
        return digest.hexdigest()
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
