"""scripts/run_api_workflow.py against a stand-in ComfyUI server on 127.0.0.1."""
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.comfy_pack import ROOT, load_api_script


def write_video(path, frames=3, seed=0):
    """A small real video (MPEG-4 part 2 in .mp4), which PyAV reads as ComfyUI's Load Video does."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (32, 32))
    for frame in np.random.default_rng(seed).integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8):
        writer.write(frame)
    writer.release()
    return path


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


ONE_SHOT = ROOT / "workflows" / "api" / "posecrafter_one_shot.json"


def node_titled(title, workflow=ONE_SHOT):
    (node_id,) = [i for i, n in json.loads(workflow.read_text()).items() if n["_meta"]["title"] == title]
    return node_id


class FakeComfyUI(BaseHTTPRequestHandler):
    """Accepts uploads and one prompt, reports a finished run with a video, two previews and a text output;
    /system_stats names `device` as its compute device (None: not found, as on an older ComfyUI)."""

    uploads, prompts, fail, partial, cancelled, interrupted, device = [], [], False, False, [], False, None

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
            content = body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--")[0]
            self.uploads.append((name, hashlib.sha256(content).hexdigest()))
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
            previews = [{"filename": f"ComfyUI_temp_qwert_0000{i}_.png", "subfolder": "", "type": "temp"} for i in (1, 2)]
            outputs = {
                "34": {"images": [{"filename": "PoseCrafter_00001_.mp4", "subfolder": "posecrafter", "type": "output"}], "animated": [True]},
                node_titled("Reference frame and Video-SIM"): {"text": ["reference frame 3 of 8"]},
                node_titled("Retargeted poses (driving | on your body)"): {"images": previews},
            }
            self.reply(200, {"p1": {"outputs": outputs, "status": {"status_str": "success", "completed": True, "messages": []}}})
        elif self.path.startswith("/view?"):
            query = parse_qs(urlsplit(self.path).query)
            self.reply(200, f"DATA of {query['filename'][0]} in {query['type'][0]}".encode(), "application/octet-stream")
        elif self.path == "/system_stats" and self.device:
            self.reply(200, {"system": {}, "devices": [{"name": f"{self.device}:0", "type": self.device, "index": 0}]})
        else:
            self.reply(404, {})


@pytest.fixture
def server():
    FakeComfyUI.uploads, FakeComfyUI.prompts, FakeComfyUI.fail = [], [], False
    FakeComfyUI.partial, FakeComfyUI.cancelled, FakeComfyUI.interrupted, FakeComfyUI.device = False, [], False, None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfyUI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_script_uploads_submits_and_fetches(server, tmp_path, capsys):
    training, driving = write_video(tmp_path / "me.mp4"), write_video(tmp_path / "moves.mp4", seed=1)
    text_node = node_titled("Target prompt")
    code = load_api_script().main([
        str(ONE_SHOT), "--server", server, "--training-video", str(training), "--driving-video", str(driving),
        "--set", f'{text_node}.text=a person in a red dress', "--out", str(tmp_path / "out"),
    ])
    assert code == 0
    # uploaded under names made from their content: a user's own me.mp4 in ComfyUI's input folder stays
    names = {path.name: f"{path.stem}-{sha(path)[:10]}.mp4" for path in (training, driving)}
    assert FakeComfyUI.uploads == [(names["me.mp4"], sha(training)), (names["moves.mp4"], sha(driving))]
    (prompt,) = FakeComfyUI.prompts
    videos = {n["_meta"]["title"].split()[0]: n["inputs"]["file"] for n in prompt.values() if n["class_type"] == "LoadVideo"}
    assert videos == {"Training": names["me.mp4"], "Driving": names["moves.mp4"]}
    assert prompt[text_node]["inputs"]["text"] == "a person in a red dress"
    assert (tmp_path / "out" / "PoseCrafter_00001_.mp4").read_bytes() == b"DATA of PoseCrafter_00001_.mp4 in output"
    out = capsys.readouterr().out
    assert out.count("reference frame 3 of 8") == 1 and "[Reference frame and Video-SIM]\nreference frame 3 of 8" in out
    # previews (ComfyUI's temporary images) are left on the server unless asked for
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["PoseCrafter_00001_.mp4"]
    assert "(2 preview images not saved; --previews saves them)" in out
    assert "the workflow ran in " in out


def test_previews_are_saved_named_after_their_node(server, tmp_path):
    out = tmp_path / "out"
    assert load_api_script().main([str(ONE_SHOT), "--server", server, "--out", str(out), "--previews"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "PoseCrafter_00001_.mp4", "retargeted_poses_00001.png", "retargeted_poses_00002.png"]
    assert (out / "retargeted_poses_00002.png").read_bytes() == b"DATA of ComfyUI_temp_qwert_00002_.png in temp"


def test_videos_are_checked_before_anything_is_uploaded(server, tmp_path):
    """A missing file, and a text file named .mp4 (ComfyUI would fail on it only after loading the models, naming
    its uploaded copy): each is refused naming the option, and nothing is uploaded or queued."""
    training = write_video(tmp_path / "me.mp4")
    script = load_api_script()
    with pytest.raises(SystemExit, match=f"^--driving-video {tmp_path / 'gone.mp4'}: not found; give the path of an"):
        script.main([str(ONE_SHOT), "--server", server, "--training-video", str(training),
                     "--driving-video", str(tmp_path / "gone.mp4")])
    text = tmp_path / "notes.mp4"
    text.write_text("shopping list\n")
    with pytest.raises(SystemExit, match=f"^--driving-video {text}: not a video this ComfyUI can read \\(.*Invalid data"):
        script.main([str(ONE_SHOT), "--server", server, "--training-video", str(training), "--driving-video", str(text)])
    with pytest.raises(SystemExit, match="^WORKFLOW .*nothing.json: not found"):
        script.main([str(tmp_path / "nothing.json"), "--server", server])
    assert FakeComfyUI.uploads == [] and FakeComfyUI.prompts == []


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_quick_shrinks_the_workflow_and_says_what_it_is(server, tmp_path, capsys, device):
    """--quick on a running ComfyUI: on a CPU (its /system_stats says so) the model is loaded in fp32, since CPUs
    without bf16 instructions run bf16 several times slower; on a GPU the workflow's dtype stays."""
    FakeComfyUI.device = device
    script = load_api_script()
    assert script.main([str(ONE_SHOT), "--server", server, "--out", str(tmp_path / "out"), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "a setup check, not a quality setting" in printed
    assert ("the model in fp32 (ComfyUI runs on the CPU)" in printed) == (device == "cpu")
    (prompt,) = FakeComfyUI.prompts
    original = json.loads(ONE_SHOT.read_text())
    (added,) = set(prompt) - set(original)
    components = prompt[added]["inputs"]["image"][0]
    assert prompt[components]["class_type"] == "GetVideoComponents"
    assert prompt[components]["inputs"]["video"] == [node_titled("Driving video (the motion to follow)"), 0]
    assert prompt[added]["class_type"] == "ImageFromBatch"
    assert prompt[added]["inputs"] | {"image": None} == {"image": None, "batch_index": 0, "length": script.QUICK["driving_frames"]}
    readers = [i for i, n in prompt.items() if [components, 0] in n["inputs"].values()]
    assert readers == [added], "every reader of the driving frames reads the first ones only"
    by_kind = {}
    for node in prompt.values():
        by_kind.setdefault(node["class_type"], []).append(node["inputs"])
    assert all(i["width"] == i["height"] == script.QUICK["size"] for i in by_kind["ImageScale"])
    (select,) = by_kind["PoseCrafterSelectFrames"]
    assert select["frames"] == script.QUICK["training_frames"]
    for kind in ("PoseCrafterOneShotTuner", "PoseCrafterDDIMInverter", "PoseCrafterTemporalSampler"):
        assert [i["steps"] for i in by_kind[kind]] == [script.QUICK["steps"]], kind
    assert by_kind["PoseCrafterOneShotTuner"][0]["update_rule"] == "clean"
    (loader,) = by_kind["PoseCrafterModelLoader"]
    assert loader["dtype"] == ("fp32" if device == "cpu" else "bf16")
    with pytest.raises(SystemExit, match="^--quick: this workflow has no driving video to shorten"):
        script.main([str(ROOT / "workflows" / "api" / "posecrafter_evaluate.json"), "--server", server, "--quick"])


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
    training = write_video(tmp_path / "me.mp4")
    workflow = ONE_SHOT
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
    assert "peak memory of the ComfyUI this script started: " in out
    log = (comfyui / "requests.log").read_text()
    assert f"argv --listen 127.0.0.1 --port {port} --cpu\npython {sys.executable}\n" in log  # --cpu given once
    assert "pong opcode 10 masked True payload hi" in log
    pid = int(log.split()[1])
    assert process_gone(pid)
    assert not load_api_script().answers(f"http://127.0.0.1:{port}")


def test_ctrl_c_cancels_the_job_and_stops_the_started_comfyui(tmp_path, capsys):
    comfyui, port = stand_in_comfyui(tmp_path), free_port()
    log = comfyui / "requests.log"

    def press_ctrl_c():  # once the job runs and its progress has been sent (slow on a busy machine)
        deadline = time.monotonic() + 600
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


def test_comfyuis_own_python_is_found_and_cpu_added_without_a_gpu(tmp_path, capsys):
    """No --python: the python of a venv inside the ComfyUI folder runs it (said so); this machine's torch sees no
    GPU and `--` names no device, so --cpu is added (said so), where ComfyUI would stop on "Torch not compiled
    with CUDA enabled", and --quick loads the model in fp32."""
    import torch

    assert not torch.cuda.is_available()
    comfyui, port = stand_in_comfyui(tmp_path), free_port()
    (comfyui / "requirements.txt").write_text("# what this ComfyUI needs\ntorch\nnumpy>=1.25.0\npywin32; sys_platform == 'win32'\n")
    venv_python = comfyui / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    code = load_api_script().main([str(ONE_SHOT), "--comfyui", str(comfyui), "--server", f"http://127.0.0.1:{port}",
                                   "--out", str(tmp_path / "out"), "--quick"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"using ComfyUI's Python {venv_python} (found beside it; --python picks another)" in out
    assert f"torch in {venv_python} sees no GPU: starting ComfyUI with --cpu" in out
    log = (comfyui / "requests.log").read_text()
    assert f"argv --listen 127.0.0.1 --port {port} --cpu\npython {venv_python}\n" in log
    (queued,) = [line for line in log.splitlines() if line.startswith("POST /prompt ")]
    prompt = json.loads(queued[len("POST /prompt "):])["prompt"]
    assert [n["inputs"]["dtype"] for n in prompt.values() if n["class_type"] == "PoseCrafterModelLoader"] == ["fp32"]


def test_a_python_without_comfyuis_requirements_is_refused_before_starting(tmp_path):
    """A real Python that has neither torch nor ComfyUI's requirements (this one without its site-packages):
    the message names that Python and where ComfyUI's own is, and ComfyUI is not started."""
    comfyui, port = stand_in_comfyui(tmp_path), free_port()
    (comfyui / "requirements.txt").write_text("torch\nSQLAlchemy>=2.0\n")
    bare = tmp_path / "bare_python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    with pytest.raises(SystemExit) as refused:
        load_api_script().main([str(ONE_SHOT), "--comfyui", str(comfyui), "--server", f"http://127.0.0.1:{port}",
                                "--python", str(bare), "--out", str(tmp_path / "out")])
    message = str(refused.value)
    assert message.startswith(f"the Python {bare} (--python) cannot import torch (ModuleNotFoundError: No module named "
                              "'torch') and lacks ComfyUI's requirements torch, SQLAlchemy, so ComfyUI cannot start")
    assert "COMFYUI_DIR/venv/bin/python" in message and "python_embeded" in message and "give it with --python" in message
    assert not (comfyui / "requests.log").exists()


def test_a_non_video_is_refused_before_comfyui_starts(tmp_path):
    comfyui, port = stand_in_comfyui(tmp_path), free_port()
    text = tmp_path / "text_as_video.mp4"
    text.write_text("not a video")
    with pytest.raises(SystemExit, match=f"^--training-video {text}: not a video this ComfyUI can read"):
        load_api_script().main([str(ONE_SHOT), "--comfyui", str(comfyui), "--server", f"http://127.0.0.1:{port}",
                                "--training-video", str(text), "--out", str(tmp_path / "out")])
    assert not (comfyui / "requests.log").exists()
