"""A stand-in for ComfyUI's main.py (NOT ComfyUI): tests copy it into a folder as main.py so that
scripts/run_api_workflow.py --comfyui can start it, to test the script's own logic (starting and
stopping a server, the WebSocket client, cancelling). It answers the few endpoints the script uses
with canned replies and sends hand-built WebSocket frames: a ping, a 16-bit length, a fragmented
message and a binary one. It logs what it saw to requests.log in its folder.

    python main.py --listen 127.0.0.1 --port PORT [--hang]   (--hang: the job never finishes)
"""
import base64
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG = "--hang" in sys.argv
PORT = int(sys.argv[sys.argv.index("--port") + 1])
queued, finished = threading.Event(), threading.Event()
LOG = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "requests.log"), "a", buffering=1)
LOG.write(f"pid {os.getpid()} argv {' '.join(sys.argv[1:])}\npython {sys.executable}\n")


def frame(opcode, payload, fin=True):
    """A server frame (unmasked), with the 7-bit or 16-bit length form."""
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([len(payload)]) if len(payload) < 126 else bytes([126]) + len(payload).to_bytes(2, "big")
    return head + payload


def text(message):
    return json.dumps(message).encode()


class StandIn(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, payload, content_type="application/json"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/upload/image":
            name = body.split(b'filename="')[1].split(b'"')[0].decode()
            return self.reply({"name": name, "subfolder": "", "type": "input"})
        LOG.write(f"POST {self.path} {body.decode()}\n")
        if self.path == "/prompt":
            queued.set()
            return self.reply({"prompt_id": "p1", "number": 0, "node_errors": {}})
        self.reply(b"", "text/plain")

    def do_GET(self):
        if self.path.startswith("/ws?"):
            return self.websocket()
        if self.path == "/history/p1":
            outputs = {"25": {"images": [{"filename": "PoseCrafter_00001_.mp4", "subfolder": "posecrafter", "type": "output"}]}}
            done = {"p1": {"outputs": outputs, "status": {"status_str": "success", "completed": True, "messages": []}}}
            return self.reply(done if finished.is_set() else {})
        if self.path.startswith("/view?"):
            return self.reply(b"MP4DATA", "video/mp4")
        self.reply({"system": {"comfyui_version": "stand-in"}})

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        queued.wait(30)
        out = self.wfile
        out.write(frame(0x1, text({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}})))
        out.write(frame(0x9, b"hi"))  # a ping: the client must answer with a masked pong
        out.flush()
        head = self.rfile.read(2)
        mask = self.rfile.read(4)
        pong = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(head[1] & 0x7F)))
        LOG.write(f"pong opcode {head[0] & 0x0F} masked {bool(head[1] & 0x80)} payload {pong.decode()}\n")
        out.write(frame(0x1, text({"type": "executing", "data": {"node": "16", "prompt_id": "p1"}})))
        padding = "x" * 200  # pushes the frame over 125 bytes: the 16-bit length form
        out.write(frame(0x1, text({"type": "progress", "data": {"value": 1, "max": 2, "node": "16", "prompt_id": "p1", "pad": padding}})))
        out.write(frame(0x1, text({"type": "progress", "data": {"value": 1, "max": 9, "prompt_id": "another"}})))
        second = text({"type": "progress", "data": {"value": 2, "max": 2, "node": "16", "prompt_id": "p1"}})
        out.write(frame(0x1, second[:10], fin=False) + frame(0x0, second[10:]))
        out.write(frame(0x2, b"\x00\x00\x00\x01preview-jpeg-bytes"))
        out.flush()
        LOG.write("sent progress\n")
        if HANG:
            time.sleep(600)
            return
        finished.set()
        out.write(frame(0x1, text({"type": "executing", "data": {"node": None, "prompt_id": "p1"}})))
        out.flush()


ThreadingHTTPServer(("127.0.0.1", PORT), StandIn).serve_forever()
