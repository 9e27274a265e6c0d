#!/usr/bin/env python3
"""Submit one of the PoseCrafter API workflows to a running ComfyUI and fetch what it produced.

    python3 scripts/run_api_workflow.py workflows/api/posecrafter_one_shot.json \
        --training-video me_dancing.mp4 --driving-video moves.mp4 --out results/

The videos are uploaded to ComfyUI's input folder and put into the workflow's Load Video nodes (the
one titled "Training video ..." and the one titled "Driving video ..."). --set changes any other input
by node id, e.g. --set 10.text="a person in a red dress is dancing" (values are read as JSON when
they parse, else as text). Python standard library only.
"""
import argparse
import json
import mimetypes
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def request(server, path, data=None, headers=None):
    req = urllib.request.Request(server.rstrip("/") + path, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as response:
        return response.read()


def upload(server, path):
    """Upload a file to ComfyUI's input folder; returns the name Load Video should use."""
    boundary = uuid.uuid4().hex
    filename = os.path.basename(path)
    with open(path, "rb") as handle:
        content = handle.read()
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


def submit(server, prompt):
    body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
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
        cancel = json.dumps({"delete": [reply["prompt_id"]]}).encode()
        request(server, "/queue", cancel, {"Content-Type": "application/json"})
        stop = json.dumps({"prompt_id": reply["prompt_id"]}).encode()
        request(server, "/interrupt", stop, {"Content-Type": "application/json"})
        raise SystemExit(
            "ComfyUI rejected part of the workflow (the run was cancelled):\n"
            + describe_node_errors(reply["node_errors"], prompt)
        )
    return reply["prompt_id"]


def wait(server, prompt_id, timeout):
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
        time.sleep(2)
    raise SystemExit(f"no result after {timeout} s; the prompt {prompt_id} may still be running in ComfyUI")


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="an API-format workflow, e.g. workflows/api/posecrafter_one_shot.json")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI's address")
    parser.add_argument("--training-video", help="the video of the person (uploaded to ComfyUI)")
    parser.add_argument("--driving-video", help="the video whose motion to follow (uploaded to ComfyUI)")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE", help="change a node input")
    parser.add_argument("--out", default="posecrafter_outputs", help="folder for the fetched outputs")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the result")
    args = parser.parse_args(argv)

    with open(args.workflow) as handle:
        prompt = json.load(handle)
    if args.training_video:
        set_video(prompt, "Training", upload(args.server, args.training_video))
    if args.driving_video:
        set_video(prompt, "Driving", upload(args.server, args.driving_video))
    for setting in args.set:
        apply_setting(prompt, setting)
    prompt_id = submit(args.server, prompt)
    print(f"queued as {prompt_id}; waiting for ComfyUI ...")
    saved = fetch_outputs(args.server, wait(args.server, prompt_id, args.timeout), args.out)
    for path in saved:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
