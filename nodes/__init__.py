"""ComfyUI node classes of the pack; the only place that imports ComfyUI modules."""
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
