"""scripts/run_api_workflow.py against a stand-in ComfyUI server on 127.0.0.1."""
import json
import threading
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
            self.uploads.append((name, b"VIDEO-BYTES-" + name.encode() in body))
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
    assert FakeComfyUI.uploads == [("me.mp4", True), ("moves.mp4", True)]
    (prompt,) = FakeComfyUI.prompts
    videos = {n["_meta"]["title"].split()[0]: n["inputs"]["file"] for n in prompt.values() if n["class_type"] == "LoadVideo"}
    assert videos == {"Training": "me.mp4", "Driving": "moves.mp4"}
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
