"""scripts/run_api_workflow.py against a stand-in ComfyUI server on 127.0.0.1."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.comfy_pack import ROOT, load_api_script


class FakeComfyUI(BaseHTTPRequestHandler):
    """Accepts uploads and one prompt, reports a finished run with a video and a text output."""

    uploads, prompts, fail, partial, cancelled, interrupted = [], [], False, False, [], False

    def log_message(self, *args):
        pass

    def reply(self, code, payload, content_type="application/json"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/upload/image":
            name = body.split(b'filename="')[1].split(b'"')[0].decode()
            self.uploads.append((name, re.search(rb"VIDEO-BYTES-[\w.]+", body).group().decode()))
            self.reply(200, {"name": name, "subfolder": "", "type": "input"})
        elif self.path == "/prompt":
            prompt = json.loads(body)["prompt"]
            if self.fail:
                self.reply(400, {"error": {"message": "Prompt outputs failed validation"}, "node_errors": {"11": {"errors": ["checkpoint not found"]}}})
                return
            self.prompts.append(prompt)
            errors = {"16": {"errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                         "details": "tuned_weights - tuned weights 'x' not found in models/posecrafter"}],
                             "dependent_outputs": ["25"], "class_type": "PoseCrafterLoadTuned"}}
            self.reply(200, {"prompt_id": "p1", "number": 0, "node_errors": errors if self.partial else {}})
        elif self.path in ("/queue", "/interrupt"):
            self.cancelled.append((self.path, json.loads(body)))
            self.reply(200, b"", "text/plain")

    def do_GET(self):
        if self.path == "/history/p1" and self.interrupted:
            messages = [["execution_interrupted", {"node_id": "16", "node_type": "PoseCrafterOneShotTuner"}]]
            self.reply(200, {"p1": {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": messages}}})
        elif self.path == "/history/p1":
            outputs = {
                "25": {"images": [{"filename": "PoseCrafter_00001_.mp4", "subfolder": "posecrafter", "type": "output"}], "animated": [True]},
                "18": {"text": ["reference frame 3 of 8"]},
            }
            self.reply(200, {"p1": {"outputs": outputs, "status": {"status_str": "success", "completed": True, "messages": []}}})
        elif self.path.startswith("/view?"):
            assert "filename=PoseCrafter_00001_.mp4" in self.path and "subfolder=posecrafter" in self.path
            self.reply(200, b"MP4DATA", "video/mp4")
        else:
            self.reply(404, {})


@pytest.fixture
def server():
    FakeComfyUI.uploads, FakeComfyUI.prompts, FakeComfyUI.fail = [], [], False
    FakeComfyUI.partial, FakeComfyUI.cancelled, FakeComfyUI.interrupted = False, [], False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfyUI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_script_uploads_submits_and_fetches(server, tmp_path, capsys):
    training, driving = tmp_path / "me.mp4", tmp_path / "moves.mp4"
    training.write_bytes(b"VIDEO-BYTES-me.mp4")
    driving.write_bytes(b"VIDEO-BYTES-moves.mp4")
    workflow = ROOT / "workflows" / "api" / "posecrafter_one_shot.json"
    api = json.loads(workflow.read_text())
    text_node = next(i for i, n in api.items() if n["_meta"]["title"] == "Target prompt")
    code = load_api_script().main([
        str(workflow), "--server", server, "--training-video", str(training), "--driving-video", str(driving),
        "--set", f'{text_node}.text=a person in a red dress', "--out", str(tmp_path / "out"),
    ])
    assert code == 0
    # uploaded under names made from their content: a user's own me.mp4 in ComfyUI's input folder stays
    names = {path.name: f"{path.stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:10]}.mp4" for path in (training, driving)}
    assert FakeComfyUI.uploads == [(names["me.mp4"], "VIDEO-BYTES-me.mp4"), (names["moves.mp4"], "VIDEO-BYTES-moves.mp4")]
    (prompt,) = FakeComfyUI.prompts
    videos = {n["_meta"]["title"].split()[0]: n["inputs"]["file"] for n in prompt.values() if n["class_type"] == "LoadVideo"}
    assert videos == {"Training": names["me.mp4"], "Driving": names["moves.mp4"]}
    assert prompt[text_node]["inputs"]["text"] == "a person in a red dress"
    assert (tmp_path / "out" / "PoseCrafter_00001_.mp4").read_bytes() == b"MP4DATA"
    assert "reference frame 3 of 8" in capsys.readouterr().out


def test_script_reports_validation_errors(server, tmp_path):
    FakeComfyUI.fail = True
    with pytest.raises(SystemExit, match="(?s)refused the workflow \\(400\\).*checkpoint not found"):
        load_api_script().main([str(ROOT / "workflows" / "api" / "posecrafter_from_tuned.json"), "--server", server])
    with pytest.raises(SystemExit, match="expected NODE_ID.INPUT=VALUE"):
        load_api_script().main([str(ROOT / "workflows" / "api" / "posecrafter_from_tuned.json"), "--server", server, "--set", "999.x=1"])


def test_script_cancels_a_partly_valid_workflow(server):
    """ComfyUI answers 200 and runs the still-valid outputs (pose previews) when a node behind the video
    output fails validation; the script takes that run back and names the failing node."""
    FakeComfyUI.partial = True
    with pytest.raises(SystemExit, match="(?s)rejected part of the workflow.*node 16 .*not found in models/posecrafter"):
        load_api_script().main([str(ROOT / "workflows" / "api" / "posecrafter_from_tuned.json"), "--server", server])
    assert FakeComfyUI.cancelled == [("/queue", {"delete": ["p1"]}), ("/interrupt", {"prompt_id": "p1"})]


def test_script_reports_an_interrupted_run(server):
    FakeComfyUI.interrupted = True
    with pytest.raises(SystemExit, match="interrupted in PoseCrafterOneShotTuner \\(node 16\\)"):
        load_api_script().main([str(ROOT / "workflows" / "api" / "posecrafter_one_shot.json"), "--server", server])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stand_in_comfyui(tmp_path):
    """A folder whose main.py is tests/fake_comfyui_main.py: a stand-in server, not ComfyUI."""
    folder = tmp_path / "ComfyUI"
    folder.mkdir()
    shutil.copy(ROOT / "tests" / "fake_comfyui_main.py", folder / "main.py")
    return folder


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_script_starts_comfyui_prints_progress_and_stops_it(tmp_path, capsys):
    """--comfyui when nothing answers: started on 127.0.0.1 at --server's port, progress read from its
    WebSocket (a ping answered, 16-bit lengths, a fragmented message, a binary one skipped), stopped after."""
    comfyui, port = stand_in_comfyui(tmp_path), free_port()
    training = tmp_path / "me.mp4"
    training.write_bytes(b"VIDEO-BYTES-me.mp4")
    workflow = ROOT / "workflows" / "api" / "posecrafter_one_shot.json"
    code = load_api_script().main([
        str(workflow), "--comfyui", str(comfyui), "--server", f"http://127.0.0.1:{port}",
        "--training-video", str(training), "--out", str(tmp_path / "out"), "--", "--cpu",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert f"starting ComfyUI in {comfyui} on 127.0.0.1:{port}" in out
    node_16 = json.loads(workflow.read_text())["16"]["class_type"]  # the stand-in reports node 16 running
    assert f"running node 16 ({node_16})\n  step 1/2\n  step 2/2\n" in out
    assert "step 1/9" not in out  # another prompt's progress
    assert f"video {tmp_path / 'out' / 'PoseCrafter_00001_.mp4'}" in out
    assert "stopped the ComfyUI this script started" in out
    log = (comfyui / "requests.log").read_text()
    assert f"argv --listen 127.0.0.1 --port {port} --cpu" in log
    assert "pong opcode 10 masked True payload hi" in log
    pid = int(log.split()[1])
    assert process_gone(pid)
    assert not load_api_script().answers(f"http://127.0.0.1:{port}")


def test_ctrl_c_cancels_the_job_and_stops_the_started_comfyui(tmp_path, capsys):
    comfyui, port = stand_in_comfyui(tmp_path), free_port()
    log = comfyui / "requests.log"

    def press_ctrl_c():  # once the job runs and its progress has been sent
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (log.exists() and "sent progress" in log.read_text()):
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    code = load_api_script().main([
        str(ROOT / "workflows" / "api" / "posecrafter_one_shot.json"), "--comfyui", str(comfyui),
        "--server", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "out"), "--", "--hang",
    ])
    assert code == 130
    out = capsys.readouterr().out
    assert "step 2/2" in out and "cancelled the job p1 in ComfyUI" in out and "stopped the ComfyUI" in out
    text = log.read_text()
    assert 'POST /queue {"delete": ["p1"]}\nPOST /interrupt {"prompt_id": "p1"}\n' in text
    assert process_gone(int(text.split()[1]))


def test_script_says_how_to_get_a_server(tmp_path):
    server = f"http://127.0.0.1:{free_port()}"
    workflow = str(ROOT / "workflows" / "api" / "posecrafter_one_shot.json")
    with pytest.raises(SystemExit, match="no ComfyUI answers at .*pass --comfyui COMFYUI_DIR"):
        load_api_script().main([workflow, "--server", server])
    with pytest.raises(SystemExit, match="no main.py there"):
        load_api_script().main([workflow, "--server", server, "--comfyui", str(tmp_path)])
    (tmp_path / "main.py").write_text("import sys; print('broken install'); sys.exit(3)")
    with pytest.raises(SystemExit, match="(?s)ComfyUI exited with code 3.*broken install"):
        load_api_script().main([workflow, "--server", server, "--comfyui", str(tmp_path), "--out", str(tmp_path / "o")])
