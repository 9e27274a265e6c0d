"""Everything the nodes need from ComfyUI, in one place.

ComfyUI's modules (folder_paths, comfy.*) exist only inside a running ComfyUI. They are imported
here, guarded, so the node classes also import and run in plain pytest. Without ComfyUI, progress
goes to tqdm, model folders come from the environment variable POSECRAFTER_MODELS_DIR (a folder
laid out like ComfyUI's models/ folder), the input and output folders from POSECRAFTER_INPUT_DIR and
POSECRAFTER_OUTPUT_DIR; that is what the tests use.
"""
import logging
import os

import torch

try:
    import comfy.model_management as _mm
    import comfy.utils as _utils
    import folder_paths as _folder_paths
except ImportError:
    _mm = _utils = _folder_paths = None
try:  # live previews only; the rest of the pack works without them
    import comfy.latent_formats as _latent_formats
    import latent_preview as _latent_preview
except ImportError:
    _latent_formats = _latent_preview = None

log = logging.getLogger("PoseCrafter")

IN_COMFYUI = _folder_paths is not None
WEIGHT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")

if IN_COMFYUI:
    # Our own folders, mirrored in extra_model_paths.yaml like any built-in one.
    for _name in ("posecrafter", "dwpose"):
        _folder_paths.add_model_folder_path(_name, os.path.join(_folder_paths.models_dir, _name))
        os.makedirs(os.path.join(_folder_paths.models_dir, _name), exist_ok=True)


def model_dirs(kind):
    """The folders searched for models of one kind ("checkpoints", "controlnet", "diffusers", ...)."""
    if IN_COMFYUI:
        try:
            return list(_folder_paths.get_folder_paths(kind))
        except KeyError:
            return []
    root = os.environ.get("POSECRAFTER_MODELS_DIR")
    return [os.path.join(root, kind)] if root else []


def is_diffusers_folder(path):
    return os.path.isfile(os.path.join(path, "config.json")) or os.path.isdir(os.path.join(path, "unet"))


def list_models(kind, files=True, folders=False):
    """Relative names of weight files (and diffusers-format folders) in every folder of one kind."""
    names = set()
    for root in model_dirs(kind):
        if not os.path.isdir(root):
            continue
        for here, dirs, filenames in os.walk(root, followlinks=True):
            rel = os.path.relpath(here, root)
            if folders and rel != "." and is_diffusers_folder(here):
                names.add(rel.replace(os.sep, "/"))
                dirs.clear()  # a model folder's own files are not separate entries
                continue
            if files:
                names.update(
                    os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")
                    for f in filenames if f.lower().endswith(WEIGHT_EXTENSIONS)
                )
    return sorted(names)


def find_model(kind, name):
    """Full path of a model by its listed name, or None. Names that climb out of the folder ('../x', an
    absolute path) are never resolved: API prompts can send any string, and only our folders are read."""
    for root in model_dirs(kind):
        path = path_inside(root, name)
        if path and os.path.exists(path):
            return path
    return None


def path_inside(root, name):
    """The path of a listed name ('sub/file.json') inside folder `root`, or None when it leads out of it."""
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        return None
    root = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(root, *name.split("/")))
    try:
        inside = os.path.commonpath([root, path]) == root
    except ValueError:  # on Windows, a name on another drive
        inside = False
    return path if inside and path != root else None


def input_dir():
    """ComfyUI's input folder (outside ComfyUI: POSECRAFTER_INPUT_DIR), or None."""
    return _folder_paths.get_input_directory() if IN_COMFYUI else os.environ.get("POSECRAFTER_INPUT_DIR")


def output_dir():
    """ComfyUI's output folder (outside ComfyUI: POSECRAFTER_OUTPUT_DIR), or None."""
    return _folder_paths.get_output_directory() if IN_COMFYUI else os.environ.get("POSECRAFTER_OUTPUT_DIR")


def missing_model_message(kind, name, what):
    dirs = model_dirs(kind) or ["(no folder: ComfyUI's models/" + kind + ")"]
    return f"{what} '{name}' not found in models/{kind}; searched: {', '.join(dirs)}"


def dwpose_dirs():
    """Where DWPose's ONNX files may be: our models/dwpose and comfyui_controlnet_aux's download folder."""
    dirs = model_dirs("dwpose")
    aux_roots = [os.environ["AUX_ANNOTATOR_CKPTS_PATH"]] if os.environ.get("AUX_ANNOTATOR_CKPTS_PATH") else []
    if IN_COMFYUI:
        aux_roots += [os.path.join(d, "comfyui_controlnet_aux", "ckpts") for d in _folder_paths.get_folder_paths("custom_nodes")]
    dirs += [os.path.join(root, "yzd-v", "DWPose") for root in aux_roots]
    return dirs


def torch_device():
    if IN_COMFYUI:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device():
    return _mm.unet_offload_device() if IN_COMFYUI else torch.device("cpu")


def free_memory_for_heavy_work():
    """Unload ComfyUI's own models (checkpoint UNet, CLIP, VAE) before our UNet takes the GPU."""
    if IN_COMFYUI:
        _mm.unload_all_models()
        _mm.soft_empty_cache()


def free_gpu_memory(device):
    """Bytes a new allocation on a CUDA `device` can still get: free device memory plus what PyTorch's cache holds
    unused (ComfyUI's own figure inside ComfyUI)."""
    if IN_COMFYUI:
        return _mm.get_free_memory(device)
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def empty_cache():
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


class Progress:
    """Per-step progress: ComfyUI's progress bar (which also makes Cancel work, and shows live previews),
    else tqdm."""

    def __init__(self, total, desc):
        self.total = total
        self.desc = desc
        self._log_every = max(1, total // 20)
        self._previewer = None
        if IN_COMFYUI:
            self._bar = _utils.ProgressBar(total)
            self._tqdm = None
        else:
            from tqdm import tqdm

            self._bar = None
            self._tqdm = tqdm(total=total, desc=desc)

    def update(self, done, preview=None, **postfix):
        """Report `done` of `total` steps, in ComfyUI with `preview` (raw SD1.5 latents [1,4,h,w]) drawn on the
        node as its sampler previews are; raises ComfyUI's interrupt exception when the user cancelled."""
        if self._bar is not None:
            _mm.throw_exception_if_processing_interrupted()
            self._bar.update_absolute(done, self.total, None if preview is None else self._preview_image(preview))
            if postfix and (done % self._log_every == 0 or done == self.total):  # e.g. the loss, 20 times a run
                log.info("%s %d/%d %s", self.desc, done, self.total,
                         " ".join(f"{key}={value}" for key, value in postfix.items()))
        else:
            self._tqdm.update(done - self._tqdm.n)
            if postfix:
                self._tqdm.set_postfix(**postfix)

    def _preview_image(self, latents):
        """The image ComfyUI's previewer makes of `latents` (None when previews are off: --preview-method)."""
        if _latent_preview is None:
            return None
        latent_format = _latent_formats.SD15()
        if self._previewer is None:
            self._previewer = _latent_preview.get_previewer(latents.device, latent_format) or False
        if not self._previewer:
            return None
        return self._previewer.decode_latent_to_preview_image("JPEG", latent_format.process_in(latents))

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()
