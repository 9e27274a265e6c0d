"""The method on the small world's committed weights (benchmarks/world/weights): one short case the models never
saw, the full method against no tuning and against retargeting off. The floors and directions come from the
outcome benchmark (benchmarks/results/world_outcome_cases.json, the same case at full length) with a margin;
fixed seeds make every run the same on one machine."""
import pytest

from benchmarks.world.cases import Case
from benchmarks.world.outcome import CASES

TARGET_FRAMES = 8  # half the benchmark's, to stay well under two minutes


@pytest.fixture(scope="module")
def rows():
    case = Case(*CASES[0], target_frames=TARGET_FRAMES)
    return {ablation: case.run(ablation) for ablation in ("vae_roundtrip", "full", "no_tuning", "retarget_off")}
