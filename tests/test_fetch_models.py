"""scripts/fetch_models.py against a real HTTP server on 127.0.0.1 (http.server in a thread, with Range
requests) serving files of known content; nothing else is reached."""
import hashlib
import json
import os
import re
import signal
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tests.comfy_pack import ROOT, load_script

fetch_models = load_script("fetch_models")


def safetensors_bytes(values, seed=0):
    """A valid safetensors file holding one F16 tensor of `values` random numbers."""
    data = np.random.default_rng(seed).standard_normal(values).astype(np.float16).tobytes()
    header = json.dumps({"w": {"dtype": "F16", "shape": [values], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def onnx_bytes():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph).SerializeToString()


BIG = safetensors_bytes(1_500_000)  # 3 MB: more than one 1 MB read, so a cut transfer leaves a partial file
SMALL_ONNX = onnx_bytes()


class Files(BaseHTTPRequestHandler):
    """Serves `files` with Range support; `mode[path]` makes one path misbehave."""

    files, mode, requests, release = {}, {}, [], threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("Range")))
        mode = self.mode.get(self.path, "ok")
        if self.path not in self.files or mode == "404":
            return self.answer(404, b"<!DOCTYPE html><title>404</title>", "text/html")
        if mode == "html":
            return self.answer(200, b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", "text/html")
        body, start = self.files[self.path], 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(body):
                return self.answer(416, b"", "text/plain")
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode in ("cut", "stall"):  # half of what is left, then the connection drops (or hangs)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            if mode == "stall":
                self.release.wait(30)
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def answer(self, code, body, content_type):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    Files.files, Files.mode, Files.requests = {}, {}, []
    Files.release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Files.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def comfyui(tmp_path):
    (tmp_path / "ComfyUI" / "models").mkdir(parents=True)
    return tmp_path / "ComfyUI"


def serve(monkeypatch, server, entries):
    """Serve (name, folder, content, sha256 or True for the content's own) and make them the script's table."""
    table = []
    for name, folder, content, sha256 in entries:
        Files.files[f"/repo/{name}"] = content
        sha256 = hashlib.sha256(content).hexdigest() if sha256 is True else sha256
        table.append((name, folder, f"{server}/repo/{name}", sha256))
    monkeypatch.setattr(fetch_models, "MODELS", table)


def leftovers(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_fresh_download_checks_and_renames(server, comfyui, monkeypatch, capsys):
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, True), ("det.onnx", "dwpose", SMALL_ONNX, None)])
    assert fetch_models.main([str(comfyui)]) == 0
    assert (comfyui / "models" / "checkpoints" / "unet.safetensors").read_bytes() == BIG
    assert (comfyui / "models" / "dwpose" / "det.onnx").read_bytes() == SMALL_ONNX
    assert leftovers(comfyui) == ["models/checkpoints/unet.safetensors", "models/dwpose/det.onnx"]
    out = capsys.readouterr()
    assert out.out.count("fetched") == 2
    assert "unet.safetensors [" in out.err and "100.0%" in out.err  # the progress bar
    assert fetch_models.main([str(comfyui), "--check"]) == 0


def test_broken_transfer_is_resumed_with_a_range_request(server, comfyui, monkeypatch, capsys):
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, True)])
    Files.mode["/repo/unet.safetensors"] = "cut"
    assert fetch_models.main([str(comfyui)]) == 1
    assert "connection closed after 1,500,0" in capsys.readouterr().out
    part = comfyui / "models" / "checkpoints" / "unet.safetensors.part"
    assert leftovers(comfyui) == ["models/checkpoints/unet.safetensors.part"]
    half = part.stat().st_size
    assert 0 < half < len(BIG) and part.read_bytes() == BIG[:half]

    Files.mode.clear()
    assert fetch_models.main([str(comfyui)]) == 0
    assert Files.requests[-1] == ("/repo/unet.safetensors", f"bytes={half}-")
    assert (comfyui / "models" / "checkpoints" / "unet.safetensors").read_bytes() == BIG
    assert leftovers(comfyui) == ["models/checkpoints/unet.safetensors"]


def test_ctrl_c_keeps_the_partial_file_for_the_next_run(server, comfyui, monkeypatch, capsys):
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, True)])
    Files.mode["/repo/unet.safetensors"] = "stall"
    part = comfyui / "models" / "checkpoints" / "unet.safetensors.part"

    def press_ctrl_c():  # once the first megabyte is on disk and the server hangs
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= fetch_models.CHUNK):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    assert fetch_models.main([str(comfyui)]) == 130
    assert "a partial download is kept as unet.safetensors.part; run again to resume it" in capsys.readouterr().out
    assert leftovers(comfyui) == ["models/checkpoints/unet.safetensors.part"]
    kept = part.stat().st_size
    assert part.read_bytes() == BIG[:kept]

    Files.release.set()
    Files.mode.clear()
    assert fetch_models.main([str(comfyui)]) == 0
    assert Files.requests[-1][1] == f"bytes={kept}-"
    assert (comfyui / "models" / "checkpoints" / "unet.safetensors").read_bytes() == BIG


def test_checksum_mismatch_renames_nothing(server, comfyui, monkeypatch, capsys):
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, hashlib.sha256(b"other").hexdigest())])
    assert fetch_models.main([str(comfyui)]) == 1
    out = capsys.readouterr().out
    assert f"checksum mismatch: SHA-256 {hashlib.sha256(BIG).hexdigest()}" in out and "deleted" in out
    assert leftovers(comfyui) == []


def test_files_without_a_checksum_get_a_format_check(server, comfyui, monkeypatch, capsys):
    whole = safetensors_bytes(1000)
    truncated = whole[:-10]
    serve(monkeypatch, server, [("cn.safetensors", "controlnet", truncated, None), ("det.onnx", "dwpose", b"\x08\x07junk", None)])
    assert fetch_models.main([str(comfyui)]) == 1
    out = capsys.readouterr().out
    assert f"describes {len(whole):,} bytes but the file has {len(truncated):,} (truncated?)" in out
    assert "det.onnx: the ONNX graph does not load" in out
    assert leftovers(comfyui) == []


@pytest.mark.parametrize("mode, content, message", [
    ("html", BIG, "gave an HTML page instead of the weights"),
    ("ok", b"<!DOCTYPE html>\n<html>a proxy's page served as octet-stream</html>", "gave an HTML page instead"),
    ("ok", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 3000000\n", "git-lfs pointer file"),
    ("404", BIG, "does not exist (404)"),
], ids=["html-content-type", "html-content", "git-lfs-pointer", "404"])
def test_wrong_answers_are_named(server, comfyui, monkeypatch, capsys, mode, content, message):
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", content, True)])
    Files.mode["/repo/unet.safetensors"] = mode
    assert fetch_models.main([str(comfyui)]) == 1
    assert message in capsys.readouterr().out
    assert leftovers(comfyui) == []


def test_no_network_and_full_disk_are_named(server, comfyui, monkeypatch, capsys):
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, True)])
    closed = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there any more
    monkeypatch.setattr(fetch_models, "MODELS", [("unet.safetensors", "checkpoints", f"http://127.0.0.1:{port}/x", None)])
    assert fetch_models.main([str(comfyui)]) == 1
    out = capsys.readouterr().out
    assert f"cannot reach 127.0.0.1:{port}" in out
    # the offline way: each missing file's URL and folder, then the check
    target = comfyui / "models" / "checkpoints"
    assert f"save each one under its name into its folder:\n  http://127.0.0.1:{port}/x\n    -> {target}{os.sep}\n" in out
    assert f"then check them: python scripts/fetch_models.py {comfyui} --check" in out

    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, True)])
    monkeypatch.setattr(fetch_models.shutil, "disk_usage", lambda path: type("usage", (), {"free": 1000})())
    assert fetch_models.main([str(comfyui)]) == 1
    assert "not enough disk space" in capsys.readouterr().out
    assert leftovers(comfyui) == []


def test_files_already_present_are_verified_not_downloaded(server, comfyui, monkeypatch, capsys):
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, True), ("cn.safetensors", "controlnet", BIG, True)])
    (comfyui / "models" / "checkpoints").mkdir()
    (comfyui / "models" / "checkpoints" / "unet.safetensors").write_bytes(BIG)
    assert fetch_models.main([str(comfyui), "--check"]) == 1
    out = capsys.readouterr().out
    assert "ok " in out and "cn.safetensors: missing; looked in" in out
    assert Files.requests == []  # --check downloads nothing

    assert fetch_models.main([str(comfyui)]) == 0
    assert [path for path, _ in Files.requests] == ["/repo/cn.safetensors"]

    wrong = BIG[:-1] + b"\x00"
    (comfyui / "models" / "checkpoints" / "unet.safetensors").write_bytes(wrong)
    assert fetch_models.main([str(comfyui)]) == 1
    assert "unet.safetensors is there but wrong: checksum mismatch" in capsys.readouterr().out
    assert (comfyui / "models" / "checkpoints" / "unet.safetensors").read_bytes() == wrong  # left alone


def test_a_different_sd15_checkpoint_is_reported_usable(server, comfyui, monkeypatch, capsys):
    """README: any SD1.5 checkpoint works. One under the table's name is 'ok', said to be another checkpoint; a
    file of another model (SD2's 1024-wide text) under that name is still wrong."""
    def checkpoint(text_width):
        shapes = {**fetch_models.SD15_TENSORS,
                  "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, text_width]}
        header, offset = {}, 0
        for key, shape in shapes.items():
            size = 2 * int(np.prod(shape))
            header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        header = json.dumps(header).encode()
        return struct.pack("<Q", len(header)) + header + bytes(offset)

    serve(monkeypatch, server, [("sd15.safetensors", "checkpoints", BIG, True)])
    (comfyui / "models" / "checkpoints").mkdir()
    mine = comfyui / "models" / "checkpoints" / "sd15.safetensors"
    mine.write_bytes(checkpoint(768))
    assert fetch_models.main([str(comfyui), "--check"]) == 0
    assert f"ok       {mine}: a different SD1.5 checkpoint than the one in the table" in capsys.readouterr().out
    mine.write_bytes(checkpoint(1024))
    assert fetch_models.main([str(comfyui), "--check"]) == 1
    assert "sd15.safetensors is there but wrong: checksum mismatch" in capsys.readouterr().out
    assert Files.requests == []


def test_extra_model_paths_are_searched_and_is_default_receives_downloads(server, comfyui, monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    (shared / "sd" / "ckpts").mkdir(parents=True)
    (shared / "sd" / "ckpts" / "unet.safetensors").write_bytes(BIG)
    (comfyui / "extra_model_paths.yaml").write_text(
        f"mine:\n  base_path: {shared}\n  is_default: true\n  checkpoints: |\n    sd/ckpts\n    other\n  dwpose: poses\n"
    )
    serve(monkeypatch, server, [("unet.safetensors", "checkpoints", BIG, True), ("det.onnx", "dwpose", SMALL_ONNX, True)])
    assert fetch_models.main([str(comfyui)]) == 0
    assert [path for path, _ in Files.requests] == ["/repo/det.onnx"]
    assert (shared / "poses" / "det.onnx").read_bytes() == SMALL_ONNX
    assert leftovers(comfyui) == ["extra_model_paths.yaml"]


def readme_models_table():
    """{file name: (folder, [source links])} from the first cell (names before any '('), second and third cells."""
    section = (ROOT / "README.md").read_text().split("## Models", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`models/"):
            continue
        folder = re.match(r"`models/([^`]+)`", cells[1]).group(1)
        for name in re.findall(r"`([^`*]+)`", cells[0].split("(")[0]):
            rows[name] = (folder, re.findall(r"\((https://[^)]+)\)", cells[2]))
    return rows


def test_the_real_table_matches_readme_and_has_the_right_shape():
    readme = readme_models_table()
    assert sorted(readme) == sorted(name for name, *_ in fetch_models.MODELS)
    for name, folder, url, sha256 in fetch_models.MODELS:
        assert readme[name][0] == folder, name
        assert any(url.startswith(source + "/resolve/main/") for source in readme[name][1]), (url, readme[name][1])
        assert url.startswith("https://huggingface.co/") and url.endswith("/" + name)
        assert sha256 is None or re.fullmatch(r"[0-9a-f]{64}", sha256), name
    assert sum(sha256 is not None for *_, sha256 in fetch_models.MODELS) == 4  # published SHA-256 found for all but the fp16 ControlNet
