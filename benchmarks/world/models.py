"""The small world's models: their configurations, the fixed random CLIP-L text encoder, the prompts, and loading.

- VAE: diffusers ``AutoencoderTiny`` (TAESD layout, 4 latent channels, 8x down), the layout ComfyUI's Load VAE
  reads. Its encoder output is the UNet's latent space, so a ComfyUI LATENT (raw, SD1.5 convention) is that
  output divided by SD1.5's 0.18215, exactly what the pack's nodes expect.
- UNet: an SD1.5-family ``UNet2DConditionModel`` with small channels and cross-attention width 768;
  ControlNet: ``ControlNetModel.from_unet`` of it, conditioned on the skeleton images the pack draws.
- Text: CLIP-L's text transformer with random weights drawn from numpy's seeded PCG64 generator, so every
  machine and version builds the same encoder; the prompts' token ids are fixed in ``PROMPT_TOKENS``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderTiny, ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file

from posecrafter.model import LATENT_SCALE, PoseCrafterModel

from .people import SHIRT_COLOURS

WEIGHT_FILES = ("vae.safetensors", "unet.safetensors", "controlnet.safetensors")
WEIGHTS = Path(__file__).parent / "weights"
SIZE = 128  # frame size the world's models are trained at (16 x 16 latents)
TEXT_SEED = 20261206

UNET_CONFIG = dict(
    sample_size=SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=4, norm_num_groups=8,
)
CONTROLNET_HINT_CHANNELS = (16, 32, 64, 128)

# CLIP-L text model (SD1.5's text encoder) and its initialisation: N(0, 0.02) weights, zero biases, unit norms.
CLIP_CONFIG = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768,
                   num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                   layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
START, END, CONTEXT = 49406, 49407, 77

# Token ids of the world's prompts under CLIP's BPE tokenizer (what ComfyUI's SD1 tokenizer gives), between the
# start and end tokens. "" is the empty (negative) prompt.
WORDS = {"a": 320, "person": 2533, "in": 530, "shirt": 2523, "red": 736, "green": 1901, "blue": 1746,
         "yellow": 4481, "purple": 5496, "orange": 4287, "white": 1579, "pink": 3360}


def prompt(shirt: str | None) -> str:
    """The world's prompt for a person in a named shirt colour, or the plain "a person"."""
    return "a person" if shirt is None else f"a person in a {shirt} shirt"


PROMPTS = ("", prompt(None), *(prompt(name) for name in SHIRT_COLOURS))


def prompt_tokens(text: str) -> list[int]:
    """The 77 token ids CLIP Text Encode feeds the text model: start, the words, end, then end as padding."""
    if text not in PROMPTS:
        raise ValueError(f"prompt {text!r} is not one of the world's: {PROMPTS}")
    ids = [START] + [WORDS[word] for word in text.split()] + [END]
    return ids + [END] * (CONTEXT - len(ids))


def clip_state_dict(seed: int = TEXT_SEED) -> dict[str, torch.Tensor]:
    """CLIP-L text-model weights in transformers' key layout, drawn from numpy's PCG64 stream of ``seed``
    in a fixed key order (float64 normals, cast to float32: stable across numpy versions and machines)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    width, ffn, layers = CLIP_CONFIG["hidden_size"], CLIP_CONFIG["intermediate_size"], CLIP_CONFIG["num_hidden_layers"]
    shapes = {"text_model.embeddings.token_embedding.weight": (CLIP_CONFIG["vocab_size"], width),
              "text_model.embeddings.position_embedding.weight": (CONTEXT, width)}
    for i in range(layers):
        prefix = f"text_model.encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{prefix}self_attn.{name}.weight"] = (width, width)
            shapes[f"{prefix}self_attn.{name}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{prefix}{norm}.weight"] = (width,)
            shapes[f"{prefix}{norm}.bias"] = (width,)
        shapes[f"{prefix}mlp.fc1.weight"], shapes[f"{prefix}mlp.fc1.bias"] = (ffn, width), (ffn,)
        shapes[f"{prefix}mlp.fc2.weight"], shapes[f"{prefix}mlp.fc2.bias"] = (width, ffn), (width,)
    shapes["text_model.final_layer_norm.weight"] = (width,)
    shapes["text_model.final_layer_norm.bias"] = (width,)
    shapes["text_projection.weight"] = (CLIP_CONFIG["projection_dim"], width)
    state = {}
    for name, shape in shapes.items():
        if "norm" in name:
            value = np.ones(shape) if name.endswith("weight") else np.zeros(shape)
        elif name.endswith("bias"):
            value = np.zeros(shape)
        else:
            value = rng.standard_normal(shape) * 0.02
        state[name] = torch.from_numpy(value.astype(np.float32))
    return state


@torch.no_grad()
def prompt_embeddings(texts=PROMPTS) -> dict[str, torch.Tensor]:
    """Each prompt's [1, 77, 768] embedding: CLIP-L's last hidden state after the final layer norm."""
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)).eval()
    own = set(model.state_dict())
    state = {key if key in own else key.removeprefix("text_model."): value
             for key, value in clip_state_dict().items() if key != "text_projection.weight"}
    model.load_state_dict(state, strict=True)
    tokens = torch.tensor([prompt_tokens(text) for text in texts])
    hidden = model(input_ids=tokens).last_hidden_state
    return {text: hidden[i:i + 1].clone() for i, text in enumerate(texts)}


def new_vae() -> AutoencoderTiny:
    return AutoencoderTiny(latent_channels=4)


def new_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**UNET_CONFIG)


def new_controlnet(unet: UNet2DConditionModel) -> ControlNetModel:
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_HINT_CHANNELS)


def _load(model, path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the world's weights are missing; train them with "
                                f"`python benchmarks/world/train.py` (or check out benchmarks/world/weights)")
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)


def load_vae(weights: Path = WEIGHTS) -> AutoencoderTiny:
    return _load(new_vae(), Path(weights) / "vae.safetensors")


def load_unet_and_controlnet(weights: Path = WEIGHTS) -> tuple[UNet2DConditionModel, ControlNetModel]:
    """The world's trained UNet and ControlNet as diffusers models (fp32, not inflated)."""
    unet = _load(new_unet(), Path(weights) / "unet.safetensors")
    return unet, _load(new_controlnet(unet), Path(weights) / "controlnet.safetensors")


def load_video_model(weights: Path = WEIGHTS) -> PoseCrafterModel:
    """The world's trained UNet and ControlNet, inflated by the pack (fp32)."""
    return PoseCrafterModel(*load_unet_and_controlnet(weights))


def encode(vae: AutoencoderTiny, frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB frames [F, H, W, 3] -> raw (ComfyUI-style) latents [F, 4, H/8, W/8]."""
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return vae.encode(images).latents / LATENT_SCALE


def decode(vae: AutoencoderTiny, latents: torch.Tensor) -> np.ndarray:
    """Raw latents [F, 4, h, w] -> uint8 RGB frames [F, 8h, 8w, 3]."""
    with torch.no_grad():
        images = vae.decode(latents.float() * LATENT_SCALE).sample
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
