#!/usr/bin/env python3
"""Run one of the PoseCrafter API workflows in ComfyUI and fetch what it produced.

    python3 scripts/run_api_workflow.py workflows/api/posecrafter_one_shot.json \
        --training-video me_dancing.mp4 --driving-video moves.mp4 [--quick]

Uses the ComfyUI answering at --server. When none answers and --comfyui COMFYUI_DIR is given, it
starts that ComfyUI (its main.py on 127.0.0.1; arguments after `--` go to main.py), waits for it,
and stops it at the end (its log: OUT/comfyui.log). ComfyUI runs with --python, else the Python of
its virtual environment or portable build when one is found beside it, else this Python; that
Python must import torch and have ComfyUI's requirements, and when its torch sees no GPU, --cpu is
added (unless `--` gives a device option). Before anything is started or uploaded, the videos are
opened with PyAV, as ComfyUI's Load Video opens them.

--quick shrinks the workflow (small frames, few frames and steps; the model in fp32 when ComfyUI
computes on the CPU) into a check that everything is set up, not a quality setting. Text reports are
printed; videos are saved into --out, and preview images too with --previews (named after their
node). The videos go through ComfyUI's upload endpoint into its input folder, named after their content
(me_dancing-1a2b3c4d5e.mp4), so a file of the user's is never replaced and a rerun reuses the copy;
they are put into the workflow's Load Video nodes (the one titled "Training video ..." and the one
titled "Driving video ..."). --set changes any other input by node id, e.g.
--set 10.text="a person in a red dress is dancing" (values are read as JSON when they parse, else
as text). While the nodes run it prints ComfyUI's progress messages (received on its WebSocket).
Ctrl-C cancels the job in ComfyUI and stops a ComfyUI the script started. Python standard library only.
"""
import argparse
import base64
import contextlib
import hashlib
import json
import mimetypes
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def request(server, path, data=None, headers=None, timeout=60):
    req = urllib.request.Request(server.rstrip("/") + path, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return response.read()


def upload(server, path):
    """Upload a file to ComfyUI's input folder under a name made from its content; returns the name
    Load Video should use."""
    boundary = uuid.uuid4().hex
    with open(path, "rb") as handle:
        content = handle.read()
    stem, ext = os.path.splitext(os.path.basename(path))
    filename = f"{stem}-{hashlib.sha256(content).hexdigest()[:10]}{ext}"
    mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    body = b"".join([
        f"--{boundary}\r\n".encode(),
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'.encode(),
        f"Content-Type: {mime}\r\n\r\n".encode(),
        content,
        f"\r\n--{boundary}\r\n".encode(),
        b'Content-Disposition: form-data; name="overwrite"\r\n\r\ntrue',
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    reply = json.loads(request(server, "/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]


def video_node(prompt, title_word):
    """The id of the workflow's one Load Video node whose title holds title_word ("Training", "Driving")."""
    nodes = [i for i, n in prompt.items() if n["class_type"] == "LoadVideo" and title_word in n["_meta"]["title"]]
    if len(nodes) != 1:
        raise SystemExit(f"the workflow has no single Load Video node titled '{title_word} ...'")
    return nodes[0]


QUICK = {"size": 256, "training_frames": 4, "driving_frames": 8, "steps": 6}


def make_quick(prompt, on_cpu):
    """--quick: frames of QUICK["size"] pixels, QUICK["training_frames"] training frames, the first
    QUICK["driving_frames"] frames of the driving video (a core Image From Batch node is put after its Get
    Video Components) and QUICK["steps"] tuning, inversion and sampling steps, tuned with the "clean" update
    rule (the "paper" rule keeps a gradient buffer as large as the model). When ComfyUI computes on the CPU
    (`on_cpu`), the model is loaded in fp32: a CPU without bf16 instructions (AVX-512 BF16, AMX) runs it in
    bf16 far slower (README, "Time and memory")."""
    if not any(n["class_type"] == "LoadVideo" and "Driving" in n["_meta"]["title"] for n in prompt.values()):
        raise SystemExit("--quick: this workflow has no driving video to shorten; --quick is for workflows (a)-(d) "
                         "(use --set on the evaluation workflow)")
    driving = video_node(prompt, "Driving")
    (components,) = [i for i, n in prompt.items()
                     if n["class_type"] == "GetVideoComponents" and n["inputs"]["video"] == [driving, 0]]
    first_frames = str(max(int(i) for i in prompt) + 1)
    for node in prompt.values():
        inputs = node["inputs"]
        for name, value in inputs.items():
            if value == [components, 0]:  # the driving video's frames
                inputs[name] = [first_frames, 0]
        kind = node["class_type"]
        if kind == "ImageScale":
            inputs.update(width=QUICK["size"], height=QUICK["size"])
        elif kind == "PoseCrafterSelectFrames":
            inputs["frames"] = QUICK["training_frames"]
        elif kind == "PoseCrafterOneShotTuner":
            inputs.update(steps=QUICK["steps"], update_rule="clean")
        elif kind in ("PoseCrafterDDIMInverter", "PoseCrafterTemporalSampler"):
            inputs["steps"] = QUICK["steps"]
        elif kind == "PoseCrafterModelLoader" and on_cpu:
            inputs["dtype"] = "fp32"
    prompt[first_frames] = {"class_type": "ImageFromBatch", "_meta": {"title": "Driving frames (--quick: the first ones)"},
                            "inputs": {"image": [components, 0], "batch_index": 0, "length": QUICK["driving_frames"]}}
    print(f"--quick: {QUICK['size']}x{QUICK['size']} frames, {QUICK['training_frames']} training frames, the first "
          f"{QUICK['driving_frames']} driving frames, {QUICK['steps']} steps of tuning, inversion and sampling"
          f"{', the model in fp32 (ComfyUI runs on the CPU)' if on_cpu else ''}: a setup check, not a quality setting",
          flush=True)


def runs_on_cpu(server, start, comfyui_args):
    """Whether ComfyUI computes on the CPU: started here with --cpu, or already running and saying so in
    /system_stats (an answer without devices counts as not)."""
    if start:
        return "--cpu" in comfyui_args
    try:
        devices = json.loads(request(server, "/system_stats", timeout=5)).get("devices") or [{}]
    except (OSError, ValueError):
        return False
    return devices[0].get("type") == "cpu"


def apply_setting(prompt, setting):
    target, _, value = setting.partition("=")
    node_id, _, name = target.partition(".")
    if node_id not in prompt or not name or not _:
        raise SystemExit(f"--set {setting!r}: expected NODE_ID.INPUT=VALUE with a node id of this workflow")
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    prompt[node_id]["inputs"][name] = value


def describe_node_errors(node_errors, prompt):
    lines = []
    for node_id, entry in node_errors.items():
        title = prompt.get(node_id, {}).get("_meta", {}).get("title") or entry.get("class_type", "")
        for error in entry.get("errors", []):
            text = error.get("details") or error.get("message") if isinstance(error, dict) else str(error)
            lines.append(f"node {node_id} ({title}): {text}")
    return "\n".join(lines)


def cancel(server, prompt_id):
    """Take the prompt off the queue if it is still waiting, and stop it if it is running."""
    for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
        request(server, path, json.dumps(body).encode(), {"Content-Type": "application/json"})


def submit(server, prompt, client_id=None):
    """Queue the prompt; ComfyUI sends its progress messages to the WebSocket of client_id."""
    body = json.dumps({"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}).encode()
    try:
        reply = request(server, "/prompt", body, {"Content-Type": "application/json"})
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        try:
            detail = describe_node_errors(json.loads(detail).get("node_errors") or {}, prompt) or detail
        except (ValueError, AttributeError):
            pass
        raise SystemExit(f"ComfyUI refused the workflow ({err.code}):\n{detail}") from None
    reply = json.loads(reply)
    if reply.get("node_errors"):
        # ComfyUI queues a prompt as long as one output node is valid (e.g. a pose preview) and skips
        # the outputs behind the failing nodes: take the partial run back off the queue and stop.
        cancel(server, reply["prompt_id"])
        raise SystemExit(
            "ComfyUI rejected part of the workflow (the run was cancelled):\n"
            + describe_node_errors(reply["node_errors"], prompt)
        )
    return reply["prompt_id"]


def wait(server, prompt_id, timeout, progress=None):
    """The prompt's outputs once /history has them; `progress` (a ProgressPrinter) prints what runs meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = json.loads(request(server, f"/history/{prompt_id}"))
        entry = history.get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            status = entry["status"]
            if status.get("status_str") == "error":
                errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
                details = "\n".join(f"{e.get('node_type')} (node {e.get('node_id')}): {e.get('exception_message')}" for e in errors)
                stops = [m[1] for m in status.get("messages", []) if m[0] == "execution_interrupted"]
                if stops and not errors:
                    details = "\n".join(f"interrupted in {e.get('node_type')} (node {e.get('node_id')})" for e in stops)
                raise SystemExit(f"the workflow failed:\n{details or json.dumps(status)}")
            return entry["outputs"]
        if progress is None:
            time.sleep(2)
        elif not progress.follow(prompt_id, seconds=2):
            progress = None
    raise SystemExit(f"no result after {timeout} s; the prompt {prompt_id} may still be running in ComfyUI")


class WebSocket:
    """The client side of a WebSocket (RFC 6455), as much as ComfyUI's /ws needs: receiving its JSON
    text messages (fragmented or not), skipping binary ones (previews), answering pings."""

    ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3

    def __init__(self, server, path, timeout=10):
        url = urllib.parse.urlsplit(server)
        sock = socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout)
        if url.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=url.hostname)
        self.sock, self.buffer, self.message = sock, b"", None
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        try:
            while b"\r\n\r\n" not in self.buffer:
                self._receive_bytes()
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status, *lines = head.decode("latin-1").split("\r\n")
            headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
            accept = base64.b64encode(hashlib.sha1((key + self.ACCEPT_GUID).encode()).digest()).decode()
            if status.split()[1:2] != ["101"] or headers.get("sec-websocket-accept") != accept:
                raise ConnectionError(f"no WebSocket at {path} ({status})")
        except BaseException:
            sock.close()
            raise

    def _receive_bytes(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def _frame(self):
        """(fin, opcode, payload) of the first complete frame in the buffer, or None."""
        buf = self.buffer
        if len(buf) < 2:
            return None
        fin, opcode, masked, length, start = buf[0] & 0x80, buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F, 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(buf) < 2 + size:
                return None
            length, start = int.from_bytes(buf[2:2 + size], "big"), 2 + size
        mask, start = (buf[start:start + 4], start + 4) if masked else (b"", start)
        if len(buf) < start + length:
            return None
        payload, self.buffer = buf[start:start + length], buf[start + length:]
        if masked:  # servers do not mask, but a masked frame is still read correctly
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        return fin, opcode, payload

    def _send(self, opcode, payload=b""):
        """One masked frame (clients must mask): a control frame, payload under 126 bytes."""
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def receive(self, timeout):
        """The next JSON text message, or None when none came within timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.sock.settimeout(remaining)
                try:
                    self._receive_bytes()
                except socket.timeout:
                    return None
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                raise ConnectionError("the server closed the WebSocket")
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode in (0x1, 0x2):
                self.message = (opcode, payload)
            elif opcode == 0x0 and self.message is not None:
                self.message = (self.message[0], self.message[1] + payload)
            if fin and opcode in (0x0, 0x1, 0x2) and self.message is not None:
                (kind, data), self.message = self.message, None
                if kind == 0x1:
                    return json.loads(data.decode("utf-8"))

    def close(self):
        with contextlib.suppress(OSError):
            self._send(0x8)
        self.sock.close()


class ProgressPrinter:
    """Prints ComfyUI's progress messages for one prompt: which node runs, and its steps."""

    def __init__(self, server, client_id, prompt):
        self.socket = WebSocket(server, f"/ws?clientId={client_id}")
        self.prompt, self.shown = prompt, None

    def follow(self, prompt_id, seconds):
        """Print what arrives for `seconds` (less when the prompt finishes); False once the socket is gone."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                message = self.socket.receive(deadline - time.monotonic())
                if message is None:
                    return True
                data = message.get("data") or {}
                if data.get("prompt_id", prompt_id) != prompt_id:
                    continue
                if message.get("type") == "executing":
                    if data.get("node") is None:
                        return True  # the prompt is done
                    print(f"running node {data['node']} ({node_title(self.prompt, data['node'])})", flush=True)
                elif message.get("type") == "progress":
                    self.show_steps(data["value"], data["max"])
        except (OSError, ValueError) as err:
            print(f"(no more progress messages: {err})")
            self.socket.close()
            return False
        return True

    def show_steps(self, value, total):
        if sys.stdout.isatty():
            print(f"\r  step {value}/{total}", end="\n" if value == total else "", flush=True)
        elif (10 * value // total) != self.shown or value == total:  # a log file: every tenth
            self.shown = 10 * value // total
            print(f"  step {value}/{total}", flush=True)


def answers(server):
    """Whether an HTTP server answers at this address (any HTTP answer counts)."""
    try:
        request(server, "/system_stats", timeout=5)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


# Where ComfyUI's own Python is, relative to the ComfyUI folder: a virtual environment inside it (Linux and
# macOS, Windows), or the Windows portable build's python_embeded beside it.
PYTHON_PLACES = ("venv/bin/python", ".venv/bin/python", "venv/Scripts/python.exe", ".venv/Scripts/python.exe",
                 "../python_embeded/python.exe")
PYTHON_HELP = ("ComfyUI's Python is the one its requirements were installed with: COMFYUI_DIR/venv/bin/python or "
               ".venv/bin/python for a virtual environment (Scripts\\python.exe on Windows), python_embeded\\python.exe "
               "beside the ComfyUI folder of the Windows portable build, or the python of the conda environment you "
               "installed it in")
DEVICE_OPTIONS = ("--cpu", "--directml", "--cuda-device", "--oneapi-device-selector")

# Run by the Python that runs (or would run) ComfyUI, with a JSON argument (ComfyUI's requirement names, or
# null when ComfyUI is not to be started) and the video paths; prints what that Python has as one JSON line:
# which requirements are missing, torch and whether it sees a GPU, and whether PyAV (which ComfyUI's Load
# Video uses) opens each video and decodes a frame.
PROBE = """
import importlib.metadata, json, sys
requirements, found = json.loads(sys.argv[1]), {"missing": [], "videos": {}}
for name in requirements or []:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        found["missing"].append(name)
if requirements is not None:
    try:
        import torch
        found["gpu"] = torch.cuda.is_available() or torch.backends.mps.is_available()
    except Exception as err:
        found["torch_error"] = f"{type(err).__name__}: {err}"
try:
    import av
except Exception as err:
    found["av_error"] = f"{type(err).__name__}: {err}"
else:
    for path in sys.argv[2:]:
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise ValueError("it holds no video stream")
                if next(container.decode(video=0), None) is None:
                    raise ValueError("no frame in it could be decoded")
            found["videos"][path] = None
        except Exception as err:
            found["videos"][path] = str(err)
print(json.dumps(found))
"""


def comfyui_python(comfyui, python):
    """(the Python to run ComfyUI with, how it was chosen): --python, else one found in PYTHON_PLACES, else this one."""
    if python:
        return python, "--python"
    for place in PYTHON_PLACES if comfyui else ():
        path = os.path.normpath(os.path.join(comfyui, place))
        if os.path.isfile(path):
            return path, "found beside ComfyUI"
    return sys.executable, "the Python running this script"


def requirement_names(comfyui):
    """The distribution names in COMFYUI/requirements.txt (options and platform-specific lines left out)."""
    path = os.path.join(comfyui, "requirements.txt")
    if not os.path.isfile(path):
        return []
    with open(path) as handle:
        lines = [line.split("#")[0].strip() for line in handle]
    return [re.match(r"[A-Za-z0-9._-]+", line).group() for line in lines if line and not line.startswith("-") and ";" not in line]


def probe(python, how, requirements, videos):
    """What PROBE finds in `python` (requirements None: ComfyUI is not started, only the videos are checked)."""
    try:
        done = subprocess.run([python, "-c", PROBE, json.dumps(requirements), *videos], capture_output=True, text=True)
    except OSError as err:
        raise SystemExit(f"cannot run the Python {python} ({how}): {err}. {PYTHON_HELP}; give it with --python") from None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"the Python {python} ({how}) failed to run a check ({done.stderr.strip()[-500:]}). "
                         f"{PYTHON_HELP}; give it with --python") from None


def check_comfyui_python(found, python, how, comfyui):
    problems = [f"cannot import torch ({found['torch_error']})"] if "torch_error" in found else []
    if found["missing"]:
        problems.append(f"lacks ComfyUI's requirements {', '.join(found['missing'])}")
    if problems:
        raise SystemExit(f"the Python {python} ({how}) {' and '.join(problems)}, so ComfyUI cannot start with it. "
                         f"{PYTHON_HELP}; give it with --python (or install ComfyUI's requirements into this one: "
                         f"{python} -m pip install -r {os.path.join(comfyui, 'requirements.txt')})")


def check_videos(found, videos, python):
    """SystemExit naming the option of a video PyAV cannot read; a note when there was no PyAV to ask."""
    if "av_error" in found:
        print(f"note: the videos are not checked before upload: the Python {python} has no PyAV "
              f"({found['av_error']}); --python with ComfyUI's Python checks them", flush=True)
        return
    for option, path in videos.items():
        error = found["videos"][path]
        if error is not None:
            raise SystemExit(f"{option} {path}: not a video this ComfyUI can read ({error}); give a video file "
                             f"(e.g. .mp4) that plays in a video player")


@contextlib.contextmanager
def started_comfyui(server, comfyui, python, comfyui_args, log_path, start_timeout):
    """Run ComfyUI's main.py in `comfyui` with `python` on 127.0.0.1 at the port of `server` while the block
    runs; at the end, print the peak memory it took (where /proc tells it) and stop it."""
    port = str(urllib.parse.urlsplit(server).port or 80)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    print(f"starting ComfyUI in {comfyui} on 127.0.0.1:{port} (log: {log_path}) ...", flush=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        # Its own process group: Ctrl-C reaches this script only, which then cancels the job and stops ComfyUI.
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        process = subprocess.Popen([python, "main.py", "--listen", "127.0.0.1", "--port", port, *comfyui_args],
                                   cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, **group)
    try:
        deadline = started + start_timeout
        while not answers(server):
            if process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-4000:]
                state = f"exited with code {process.returncode}" if process.poll() is not None else \
                    f"did not answer within {start_timeout:.0f} s"
                raise SystemExit(f"ComfyUI {state}; the end of its log ({log_path}):\n{tail}")
            time.sleep(0.5)
        print(f"ComfyUI is up at {server} after {duration(time.monotonic() - started)}", flush=True)
        yield server
        status = f"/proc/{process.pid}/status"
        if os.path.isfile(status):
            with open(status) as handle:
                peak = re.search(r"VmHWM:\s+(\d+) kB", handle.read())
            if peak:
                print(f"peak memory of the ComfyUI this script started: {int(peak.group(1)) / 2**20:.1f} GiB", flush=True)
    finally:
        stop(process)
        print("stopped the ComfyUI this script started", flush=True)


def duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def stop(process):
    """End a server process: terminate, then kill it if it is still running after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def node_title(prompt, node_id):
    node = prompt.get(str(node_id), {})
    return node.get("_meta", {}).get("title") or node.get("class_type", "")


def fetch_outputs(server, outputs, prompt, out_dir, previews):
    """Print the text reports (with their node's title) and download the files the nodes saved: videos and
    other outputs under their own names, previews (ComfyUI's temporary images) only when `previews`, named
    after their node, e.g. retargeted_poses_00001.png. Returns (saved paths, previews left out)."""
    os.makedirs(out_dir, exist_ok=True)
    saved, left_out = [], 0
    for node_id, ui in outputs.items():
        title = node_title(prompt, node_id)
        for text in ui.get("text", []):
            print(f"[{title}]\n{text}")
        items = [item for key in ("images", "videos", "gifs") for item in ui.get(key, [])
                 if isinstance(item, dict) and "filename" in item]
        number = 0
        for item in items:
            name = item["filename"]
            if item.get("type") == "temp":
                if not previews:
                    left_out += 1
                    continue
                number += 1
                stem = re.sub(r"[^a-z0-9]+", "_", title.split("(")[0].lower()).strip("_") or f"node_{node_id}"
                name = f"{stem}_{number:05d}{os.path.splitext(name)[1]}"
            query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
            path = os.path.join(out_dir, name)
            with open(path, "wb") as handle:
                handle.write(request(server, f"/view?{query}"))
            saved.append(path)
    return saved, left_out


def run(server, prompt, videos, args):
    """Upload the videos into their Load Video nodes, queue the prompt, follow it, fetch what it made."""
    for node_id, path in videos.items():
        prompt[node_id]["inputs"]["file"] = upload(server, path)
    client_id = uuid.uuid4().hex
    try:
        progress = ProgressPrinter(server, client_id, prompt)
    except (OSError, ValueError) as err:
        print(f"(no progress messages: {err}; waiting for the result only)")
        progress = None
    try:
        prompt_id = submit(server, prompt, client_id)
        queued = time.monotonic()
        print(f"queued as {prompt_id}; waiting for ComfyUI ...", flush=True)
        try:
            outputs = wait(server, prompt_id, args.timeout, progress)
        except KeyboardInterrupt:
            cancel(server, prompt_id)
            print(f"\ncancelled the job {prompt_id} in ComfyUI")
            raise
    finally:
        if progress is not None:
            progress.socket.close()
    print(f"the workflow ran in {duration(time.monotonic() - queued)}", flush=True)
    saved, left_out = fetch_outputs(server, outputs, prompt, args.out, args.previews)
    for path in saved:
        print(f"{'video' if path.endswith(('.mp4', '.webm', '.gif')) else 'saved'} {path}")
    if left_out:
        print(f"({left_out} preview images not saved; --previews saves them)")
    return 0


def check_files(options):
    """SystemExit naming the first option whose file is not there or cannot be read."""
    for option, path in options.items():
        if not os.path.isfile(path):
            raise SystemExit(f"{option} {path}: not found; give the path of an existing file")
        if not os.access(path, os.R_OK):
            raise SystemExit(f"{option} {path}: not readable (permissions); copy it somewhere readable or fix them")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    comfyui_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s WORKFLOW [options] [-- COMFYUI_MAIN_ARGS ...]")
    parser.add_argument("workflow", help="an API-format workflow, e.g. workflows/api/posecrafter_one_shot.json")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI's address")
    parser.add_argument("--comfyui", metavar="COMFYUI_DIR", help="start this ComfyUI when none answers at --server")
    parser.add_argument("--python", help="the Python that runs ComfyUI's main.py (default: its venv's or portable "
                                         "build's when found beside it, else this one)")
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds to wait for a started ComfyUI")
    parser.add_argument("--training-video", help="the video of the person (uploaded to ComfyUI)")
    parser.add_argument("--driving-video", help="the video whose motion to follow (uploaded to ComfyUI)")
    parser.add_argument("--quick", action="store_true", help="small frames, few frames and steps: a setup check, "
                                                             "not a quality setting")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE", help="change a node input")
    parser.add_argument("--out", default="posecrafter_outputs", help="folder for the fetched outputs")
    parser.add_argument("--previews", action="store_true", help="also save the preview images, named after their node")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the result")
    args = parser.parse_args(argv)

    check_files({"WORKFLOW": args.workflow})
    try:
        with open(args.workflow) as handle:
            prompt = json.load(handle)
    except ValueError as err:
        raise SystemExit(f"WORKFLOW {args.workflow}: not an API-format workflow ({err}); use one of workflows/api/") from None
    options = {option: path for option, path in (("--training-video", args.training_video),
                                                  ("--driving-video", args.driving_video)) if path}
    check_files(options)
    # the Load Video node of each video, by the first word of its title
    videos = {video_node(prompt, {"--training-video": "Training", "--driving-video": "Driving"}[option]): path
              for option, path in options.items()}
    try:
        start, python, comfyui_args = check_before_starting(args, comfyui_args, options)
        if args.quick:
            make_quick(prompt, runs_on_cpu(args.server, start, comfyui_args))
        for setting in args.set:
            apply_setting(prompt, setting)
        with (started_comfyui(args.server, args.comfyui, python, comfyui_args, os.path.join(args.out, "comfyui.log"),
                              args.start_timeout) if start else contextlib.nullcontext(args.server)) as server:
            return run(server, prompt, videos, args)
    except KeyboardInterrupt:
        print("interrupted")
        return 130


def check_before_starting(args, comfyui_args, videos):
    """Whether to start ComfyUI, the Python for it and its arguments, once everything that can be checked
    before starting or uploading is right: the server or ComfyUI folder, that Python (torch, ComfyUI's
    requirements; --cpu added when its torch sees no GPU and no device is named) and the videos."""
    start = not answers(args.server)
    if start and not args.comfyui:
        raise SystemExit(f"no ComfyUI answers at {args.server}: start ComfyUI, or pass --comfyui COMFYUI_DIR "
                         f"to let this script start it")
    if start:
        url = urllib.parse.urlsplit(args.server)
        if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit(f"--comfyui starts ComfyUI on 127.0.0.1; give --server http://127.0.0.1:PORT, not {args.server}")
        if not os.path.isfile(os.path.join(args.comfyui, "main.py")):
            raise SystemExit(f"--comfyui {args.comfyui}: no main.py there; give the ComfyUI folder")
    elif args.comfyui:
        print(f"using the ComfyUI already running at {args.server} (not starting {args.comfyui})", flush=True)
    python, how = comfyui_python(args.comfyui, args.python)
    if how == "found beside ComfyUI":
        print(f"using ComfyUI's Python {python} (found beside it; --python picks another)", flush=True)
    found = probe(python, how, requirement_names(args.comfyui) if start else None, list(videos.values()))
    if start:
        check_comfyui_python(found, python, how, args.comfyui)
        if not found["gpu"] and not any(arg.split("=")[0] in DEVICE_OPTIONS for arg in comfyui_args):
            comfyui_args = [*comfyui_args, "--cpu"]
            print(f"torch in {python} sees no GPU: starting ComfyUI with --cpu", flush=True)
    check_videos(found, videos, python)
    return start, python, comfyui_args


if __name__ == "__main__":
    sys.exit(main())
