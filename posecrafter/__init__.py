"""PoseCrafter engine: plain PyTorch/diffusers, no ComfyUI imports (see README, "Engine")."""
