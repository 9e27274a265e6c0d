#!/usr/bin/env python3
"""Run one of the PoseCrafter API workflows in ComfyUI and fetch what it produced.

    python3 scripts/run_api_workflow.py workflows/api/posecrafter_one_shot.json \
        --training-video me_dancing.mp4 --driving-video moves.mp4 --out results/

Uses the ComfyUI answering at --server. When none answers and --comfyui COMFYUI_DIR is given, it
starts that ComfyUI (its main.py on 127.0.0.1, with --python or this Python; arguments after `--`
go to main.py, e.g. `-- --cpu`), waits for it, and stops it at the end (its log: OUT/comfyui.log).

The videos go through ComfyUI's upload endpoint into its input folder, named after their content
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


def set_video(prompt, title_word, filename):
    nodes = [n for n in prompt.values() if n["class_type"] == "LoadVideo" and title_word in n["_meta"]["title"]]
    if len(nodes) != 1:
        raise SystemExit(f"the workflow has no single Load Video node titled '{title_word} ...'")
    nodes[0]["inputs"]["file"] = filename


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

    def title(self, node_id):
        node = self.prompt.get(str(node_id), {})
        return node.get("_meta", {}).get("title") or node.get("class_type", "")

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
                    print(f"running node {data['node']} ({self.title(data['node'])})", flush=True)
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


@contextlib.contextmanager
def comfyui_server(server, comfyui, python, comfyui_args, log_path, start_timeout):
    """The address of a ComfyUI to use: the one at `server`, else the one in `comfyui`, started on
    127.0.0.1 at the port of `server` and stopped when the block ends."""
    if answers(server):
        if comfyui:
            print(f"using the ComfyUI already running at {server} (not starting {comfyui})", flush=True)
        yield server
        return
    if not comfyui:
        raise SystemExit(f"no ComfyUI answers at {server}: start ComfyUI, or pass --comfyui COMFYUI_DIR "
                         f"to let this script start it")
    url = urllib.parse.urlsplit(server)
    if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"--comfyui starts ComfyUI on 127.0.0.1; give --server http://127.0.0.1:PORT, not {server}")
    if not os.path.isfile(os.path.join(comfyui, "main.py")):
        raise SystemExit(f"--comfyui {comfyui}: no main.py there; give the ComfyUI folder")
    port = str(url.port or 80)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    print(f"starting ComfyUI in {comfyui} on 127.0.0.1:{port} (log: {log_path}) ...", flush=True)
    with open(log_path, "w") as log:
        # Its own process group: Ctrl-C reaches this script only, which then cancels the job and stops ComfyUI.
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        process = subprocess.Popen([python, "main.py", "--listen", "127.0.0.1", "--port", port, *comfyui_args],
                                   cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, **group)
    try:
        deadline = time.monotonic() + start_timeout
        while not answers(server):
            if process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-4000:]
                state = f"exited with code {process.returncode}" if process.poll() is not None else \
                    f"did not answer within {start_timeout:.0f} s"
                raise SystemExit(f"ComfyUI {state}; the end of its log ({log_path}):\n{tail}")
            time.sleep(0.5)
        print(f"ComfyUI is up at {server}", flush=True)
        yield server
    finally:
        stop(process)
        print("stopped the ComfyUI this script started", flush=True)


def stop(process):
    """End a server process: terminate, then kill it if it is still running after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def fetch_outputs(server, outputs, out_dir):
    """Download every file a node reported (images, videos) and print the text reports."""
    os.makedirs(out_dir, exist_ok=True)
    saved = []
    for node_id, ui in outputs.items():
        for text in ui.get("text", []):
            print(f"[node {node_id}] {text}")
        for key in ("images", "videos", "gifs"):
            for item in ui.get(key, []):
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
                path = os.path.join(out_dir, item["filename"])
                with open(path, "wb") as handle:
                    handle.write(request(server, f"/view?{query}"))
                saved.append(path)
    return saved


def run(server, prompt, args):
    if args.training_video:
        set_video(prompt, "Training", upload(server, args.training_video))
    if args.driving_video:
        set_video(prompt, "Driving", upload(server, args.driving_video))
    client_id = uuid.uuid4().hex
    try:
        progress = ProgressPrinter(server, client_id, prompt)
    except (OSError, ValueError) as err:
        print(f"(no progress messages: {err}; waiting for the result only)")
        progress = None
    try:
        prompt_id = submit(server, prompt, client_id)
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
    saved = fetch_outputs(server, outputs, args.out)
    for path in saved:
        print(f"{'video' if path.endswith(('.mp4', '.webm', '.gif')) else 'saved'} {path}")
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    comfyui_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s WORKFLOW [options] [-- COMFYUI_MAIN_ARGS ...]")
    parser.add_argument("workflow", help="an API-format workflow, e.g. workflows/api/posecrafter_one_shot.json")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI's address")
    parser.add_argument("--comfyui", metavar="COMFYUI_DIR", help="start this ComfyUI when none answers at --server")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI's main.py (default: this one)")
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds to wait for a started ComfyUI")
    parser.add_argument("--training-video", help="the video of the person (uploaded to ComfyUI)")
    parser.add_argument("--driving-video", help="the video whose motion to follow (uploaded to ComfyUI)")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE", help="change a node input")
    parser.add_argument("--out", default="posecrafter_outputs", help="folder for the fetched outputs")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the result")
    args = parser.parse_args(argv)

    with open(args.workflow) as handle:
        prompt = json.load(handle)
    for setting in args.set:
        apply_setting(prompt, setting)
    try:
        with comfyui_server(args.server, args.comfyui, args.python, comfyui_args,
                            os.path.join(args.out, "comfyui.log"), args.start_timeout) as server:
            return run(server, prompt, args)
    except KeyboardInterrupt:
        print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
