"""The small world: synthetic people, models trained on them, and the method's outcome measured end to end.

Public interface (also called from outside the benchmark, on seeds it never used):

- ``MOTIONS``: the motion kinds; ``ABLATIONS``: the outcome benchmark's row names.
- ``identity(seed)``: a person's looks; ``background(seed)``: a static room (uint8 [128, 128, 3]).
- ``motion(kind, frames, seed, size)``: a ``posecrafter.pose.PoseSequence`` (the seed also picks the body).
- ``render(poses, identity, background)``: uint8 frames [F, H, W, 3].
- ``score(frames, target_poses, identity, background)``: {"pose", "identity", "background", "flicker", ...}.
- ``run_case(identity_seed, background_seed, training_motion, driving_motion, ablation="full")``: the scores of
  the video the pack generates for that case (see ``cases.py``); needs the trained weights in ``weights/``.

The training seeds start at 1,000,000 (``train.py``); the benchmark's cases use seeds below 1,000.
"""
from .cases import ABLATIONS, run_case
from .people import MOTIONS, background, identity, motion, render
from .scoring import score

__all__ = ["MOTIONS", "ABLATIONS", "identity", "background", "motion", "render", "score", "run_case"]
