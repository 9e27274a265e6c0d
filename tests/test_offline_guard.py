import ast
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NETWORK_MODULES = {"urllib", "http", "requests", "socket", "ssl", "aiohttp", "ftplib", "huggingface_hub"}


def test_network_connections_are_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(AssertionError, match="network connection"):
        s.connect(("93.184.216.34", 80))
    s.close()


def test_the_pack_itself_never_downloads():
    """Only scripts/ (run by the user, on request) may reach the network; the engine and the nodes import
    no network module and call no hub download."""
    files = [ROOT / "__init__.py", *sorted((ROOT / "posecrafter").rglob("*.py")), *sorted((ROOT / "nodes").rglob("*.py"))]
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for module in modules:
                assert module.split(".")[0] not in NETWORK_MODULES, f"{path.relative_to(ROOT)} imports {module}"
            if isinstance(node, (ast.Name, ast.Attribute)):
                name = node.id if isinstance(node, ast.Name) else node.attr
                assert name not in ("hf_hub_download", "snapshot_download"), f"{path.relative_to(ROOT)} calls {name}"
