"""The DDIM schedulers of spec 4, built from the SD1.5 scheduler config shipped in the pack.

1000 training steps, scaled-linear betas 0.00085..0.012, epsilon prediction, ``steps_offset=1`` and
``set_alpha_to_one=False``: 50 steps give timesteps 981, 961, ..., 1 (inversion walks them upwards).
"""
from diffusers import DDIMInverseScheduler, DDIMScheduler

from .loading import CONFIG_DIR

SCHEDULER_CONFIG = CONFIG_DIR / "ddim_scheduler"
# With steps_offset=1, 1000 steps would start at timestep 1000, one past the 1000-entry noise schedule.
MAX_STEPS = 999


def ddim_scheduler(steps: int) -> DDIMScheduler:
    """DDIM with eta 0 (deterministic) for sampling."""
    scheduler = DDIMScheduler.from_pretrained(str(SCHEDULER_CONFIG))
    scheduler.set_timesteps(steps)
    return scheduler


def ddim_inverse_scheduler(steps: int) -> DDIMInverseScheduler:
    """DDIM inversion: clean latent -> Z_T along the same timestep grid, ascending."""
    scheduler = DDIMInverseScheduler.from_config(DDIMScheduler.load_config(str(SCHEDULER_CONFIG)))
    scheduler.set_timesteps(steps)
    return scheduler


def check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
