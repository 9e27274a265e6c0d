"""Import the node pack the way ComfyUI does: the repository root as a package under a made-up name.

ComfyUI loads a custom node folder through importlib.util.spec_from_file_location on its __init__.py,
so the pack's own imports must be relative; importing it like this here checks that they are.
"""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "custom_nodes_x_posecrafter_under_test"


def load_pack():
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[PACKAGE]
            raise
    return sys.modules[PACKAGE]


def pack_module(name):
    """A submodule of the loaded pack, e.g. pack_module("nodes.model_nodes")."""
    load_pack()
    return sys.modules[f"{PACKAGE}.{name}"]


def load_script(name):
    """scripts/NAME.py as a module (the scripts are not part of the pack)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_api_script():
    return load_script("run_api_workflow")
