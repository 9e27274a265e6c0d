"""ComfyUI node classes of the pack; the only place that imports ComfyUI modules."""
from ..posecrafter.dwpose import onnxruntime_conflict
from . import _comfy, evaluate_nodes, frame_nodes, model_nodes, pose_nodes, retarget_nodes, sampling_nodes

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (frame_nodes, model_nodes, pose_nodes, retarget_nodes, sampling_nodes, evaluate_nodes):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

_conflict = onnxruntime_conflict()
if _conflict:
    _comfy.log.warning("PoseCrafter: %s", _conflict)
