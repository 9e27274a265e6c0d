#!/usr/bin/env python3
"""Download the model files PoseCrafter needs into a ComfyUI's models folders, and check them.

    python scripts/fetch_models.py /path/to/ComfyUI           # download what is missing
    python scripts/fetch_models.py /path/to/ComfyUI --check   # only verify what is there

The files are those of README's Models table (MODELS below: the one place that holds the URLs and
checksums). Each file is written to NAME.part next to its destination, resumed with an HTTP Range
request when a .part is already there, checked, and only then renamed into place. The check is the
SHA-256 that Hugging Face publishes for the file where one was found, and always a format check
(the safetensors header parses and accounts for the whole file; the ONNX graph loads). Files
already present and correct are skipped; a file present but wrong is reported and left alone, except a
different SD1.5 checkpoint under the checkpoint's name, which is reported as usable. Files still
missing at the end are listed with their URL and folder, to put in place by hand and check with --check.
A folder mapped in ComfyUI's extra_model_paths.yaml counts as the file's folder too (the file is
looked for there, and downloaded there when that section is marked is_default).

Ctrl-C keeps the .part file; the next run resumes it. Python standard library only, so ComfyUI's
own Python runs it (PyYAML, which ComfyUI requires, is used for extra_model_paths.yaml when present).
"""
import argparse
import errno
import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import sys
import time
import urllib.error
import urllib.request

HF = "https://huggingface.co"

# file name, ComfyUI models folder, URL, SHA-256 (None where no published checksum was found).
MODELS = [
    ("v1-5-pruned-emaonly.safetensors", "checkpoints",
     f"{HF}/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors",
     "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"),
    ("control_v11p_sd15_openpose_fp16.safetensors", "controlnet",
     f"{HF}/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/control_v11p_sd15_openpose_fp16.safetensors",
     None),
    ("vae-ft-mse-840000-ema-pruned.safetensors", "vae",
     f"{HF}/stabilityai/sd-vae-ft-mse-original/resolve/main/vae-ft-mse-840000-ema-pruned.safetensors",
     "735e4c3a447a3255760d7f86845f09f937809baa529c17370d83e4c3758f3c75"),
    ("yolox_l.onnx", "dwpose",
     f"{HF}/yzd-v/DWPose/resolve/main/yolox_l.onnx",
     "7860ae79de6c89a3c1eb72ae9a2756c0ccfbe04b7791bb5880afabd97855a411"),
    ("dw-ll_ucoco_384.onnx", "dwpose",
     f"{HF}/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx",
     "724f4ff2439ed61afb86fb8a1951ec39c6220682803b4a8bd4f598cd913b1843"),
]

CHUNK = 1 << 20
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


class FetchError(Exception):
    """A failure with a message that says what happened and what to do."""


class ChecksumMismatch(FetchError):
    """A file of the right format whose SHA-256 is not the published one."""


# Tensors that make a safetensors file an SD1.5 checkpoint the pack can use, with their shapes: the UNet's
# 4-channel input conv (not an inpainting model's 9), its cross-attention over 768-wide text (SD2: 1024) and the
# CLIP ViT-L text encoder the workflows take from the checkpoint.
SD15_TENSORS = {
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768],
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": [768],
}


def model_folders(comfyui, folder):
    """(folders where the file may already be, the folder to download into) for one models folder."""
    default = os.path.join(comfyui, "models", folder)
    found, target = [default], default
    for path, is_default in extra_model_paths(comfyui).get(folder, []):
        found.append(path)
        if is_default:
            target = path
    if folder == "dwpose":  # comfyui_controlnet_aux's own download folder, which the pack searches too
        found.append(os.path.join(comfyui, "custom_nodes", "comfyui_controlnet_aux", "ckpts", "yzd-v", "DWPose"))
    return found, target


def extra_model_paths(comfyui):
    """{folder name: [(path, is_default)]} from COMFYUI/extra_model_paths.yaml, read as ComfyUI reads it."""
    yaml_path = os.path.join(comfyui, "extra_model_paths.yaml")
    if not os.path.isfile(yaml_path):
        return {}
    try:
        import yaml
    except ImportError:
        print(f"note: {yaml_path} is not read (PyYAML is not installed in this Python)")
        return {}
    with open(yaml_path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    here, paths = os.path.dirname(os.path.abspath(yaml_path)), {}
    for section in config.values():
        if not isinstance(section, dict):
            continue
        section = dict(section)
        base = section.pop("base_path", None)
        if base:
            base = os.path.join(here, os.path.expandvars(os.path.expanduser(str(base))))
        is_default = bool(section.pop("is_default", False))
        for folder, value in section.items():
            for line in str(value).split("\n"):
                if line.strip():
                    paths.setdefault(folder, []).append((os.path.join(base or here, line.strip()), is_default))
    return paths


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_content_start(path, url):
    """An HTML page or a git-lfs pointer saved in place of the weights: say so, not 'checksum mismatch'."""
    with open(path, "rb") as handle:
        start = handle.read(512)
    if start.startswith(LFS_POINTER):
        raise FetchError(f"{url} gave a git-lfs pointer file instead of the weights (a 'git clone' without "
                         f"git-lfs, or a raw/ URL); download the file itself")
    if start.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        raise FetchError(f"{url} gave an HTML page instead of the weights (a login page, a proxy or a captive "
                         f"portal?); open the URL in a browser to see what the server says")


def check_safetensors(path):
    """The header of a whole safetensors file; FetchError when it is not one or is cut short."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise FetchError("too short for a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 << 20):
            raise FetchError("not a safetensors file (its header length is impossible)")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError:
            raise FetchError("not a safetensors file (its header is not JSON)") from None
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if not ends or expected != size:
        raise FetchError(f"the safetensors header describes {expected:,} bytes but the file has {size:,} (truncated?)")
    return header


def is_sd15_checkpoint(path):
    try:
        header = check_safetensors(path)
    except FetchError:
        return False
    return all(header.get(key, {}).get("shape") == shape for key, shape in SD15_TENSORS.items())


def check_onnx(path):
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            onnx.load(path, load_external_data=False)
        except Exception as err:  # a protobuf DecodeError or onnx's own errors, depending on the version
            raise FetchError(f"the ONNX graph does not load: {err}") from None
        return
    # Without the onnx package: a ModelProto starts with field 1 (ir_version) as a varint, tag 0x08.
    with open(path, "rb") as handle:
        if handle.read(1) != b"\x08":
            raise FetchError("not an ONNX file")


def verify(path, url, sha256):
    """Raise FetchError naming what is wrong with the file at path, else return."""
    check_content_start(path, url)
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ChecksumMismatch(f"checksum mismatch: SHA-256 {actual}, expected {sha256}")
    (check_onnx if path.endswith((".onnx", ".onnx.part")) else check_safetensors)(path)


class Progress:
    """One progress line per file on stderr: percentage, megabytes and speed."""

    def __init__(self, name, done, total):
        self.name, self.start_done, self.total = name, done, total
        self.started = self.shown = time.monotonic()
        self.show(done, force=True)

    def show(self, done, force=False):
        now = time.monotonic()
        if not force and now - self.shown < 0.5:
            return
        self.shown = now
        rate = (done - self.start_done) / max(now - self.started, 1e-6) / 1e6
        if self.total:
            bar = "#" * int(30 * done / self.total)
            text = f"{self.name} [{bar:<30}] {100 * done / self.total:5.1f}% {done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB"
        else:
            text = f"{self.name} {done / 1e6:,.1f} MB"
        sys.stderr.write(f"\r{text} {rate:.1f} MB/s ")
        sys.stderr.flush()

    def close(self, done):
        self.show(done, force=True)
        sys.stderr.write("\n")


def open_url(url, offset):
    request = urllib.request.Request(url, headers={"User-Agent": "posecrafter-fetch-models/1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")  # kept on redirects to the CDN
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return None  # nothing left after offset: the .part is complete
        if err.code == 404:
            raise FetchError(f"{url} does not exist (404); the file may have moved: see README's Models table") from None
        if err.code in (401, 403):
            raise FetchError(f"{url} refused access ({err.code}); open it in a browser (the repository may "
                             f"need you to log in or accept its licence) and put the file in place by hand") from None
        raise FetchError(f"{url} answered {err.code} {err.reason}; try again later") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(f"cannot reach {url.split('/')[2]} ({reason}); check the network connection "
                         f"(or the proxy settings: HTTPS_PROXY)") from None


def download(url, part, name):
    """Append the rest of url to part (resuming from its current size); returns when the server is done."""
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    response = open_url(url, offset)
    if response is None:
        return
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range request: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        if response.headers.get_content_type() == "text/html":
            raise FetchError(f"{url} gave an HTML page instead of the weights (a login page, a proxy or a captive "
                             f"portal?); open the URL in a browser to see what the server says")
        folder = os.path.dirname(part)
        if length and shutil.disk_usage(folder).free < int(length):
            raise FetchError(f"not enough disk space in {folder}: {name} needs {int(length) / 1e9:.2f} GB more, "
                             f"{shutil.disk_usage(folder).free / 1e9:.2f} GB free")
        done, progress = offset, Progress(name, offset, total)
        try:
            with open(part, "ab" if offset else "wb") as out:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as err:  # a reset connection, an IncompleteRead
                        raise FetchError(f"the connection broke after {done:,} bytes ({err}); run again to resume") from None
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    progress.show(done)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise FetchError(f"the disk is full ({folder}); free some space and run again to resume") from None
            raise
        finally:
            progress.close(done)
        if total is not None and done < total:
            raise FetchError(f"the connection closed after {done:,} of {total:,} bytes; run again to resume")


def fetch(name, folder, url, sha256, comfyui, check_only):
    """Make sure one file is in place and correct; returns a one-line report, raises FetchError."""
    found_in, target = model_folders(comfyui, folder)
    for directory in found_in:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            try:
                verify(path, url, sha256)
            except FetchError as err:
                if isinstance(err, ChecksumMismatch) and folder == "checkpoints" and is_sd15_checkpoint(path):
                    return (f"ok       {path}: a different SD1.5 checkpoint than the one in the table (its SHA-256 "
                            f"differs); the pack can use it as well")
                raise FetchError(f"{path} is there but wrong: {err}. Move it away (or delete it) and run again "
                                 f"to download it") from None
            return f"ok       {path}"
    destination = os.path.join(target, name)
    if check_only:
        raise FetchError(f"missing; looked in {', '.join(found_in)}")
    os.makedirs(target, exist_ok=True)
    part = destination + ".part"
    download(url, part, name)
    try:
        verify(part, url, sha256)
    except FetchError as err:
        os.remove(part)
        raise FetchError(f"{err}; the download was deleted, run again to download it afresh") from None
    os.replace(part, destination)
    return f"fetched  {destination}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comfyui", help="the ComfyUI folder (the one holding main.py and models/)")
    parser.add_argument("--check", action="store_true", help="only verify the files, download nothing")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.comfyui, "models")):
        raise SystemExit(f"{args.comfyui} is not a ComfyUI folder (it has no models/ folder)")
    failures, missing = 0, []
    for name, folder, url, sha256 in MODELS:
        try:
            print(fetch(name, folder, url, sha256, args.comfyui, args.check), flush=True)
        except FetchError as err:
            failures += 1
            print(f"FAILED   {name}: {err}", flush=True)
            found_in, target = model_folders(args.comfyui, folder)
            if not any(os.path.isfile(os.path.join(directory, name)) for directory in found_in):
                missing.append((url, target))
        except KeyboardInterrupt:
            print(f"\ninterrupted at {name}: a partial download is kept as {name}.part; run again to resume it")
            return 130
    if failures:
        print(f"{failures} of {len(MODELS)} files are not in place")
    if missing:
        print("\nTo put the missing files in place by hand (e.g. downloaded on another machine), save each one "
              "under its name into its folder:")
        for url, target in missing:
            print(f"  {url}\n    -> {target}{os.sep}")
        print(f"then check them: python scripts/fetch_models.py {args.comfyui} --check")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
