"""The method on the small world's committed weights (benchmarks/world/weights), end to end through the engine
calls the nodes make: the outcome benchmark's first case (a person the models never saw), the full method against
no tuning and against retargeting off. Expected values are that case's scores in the benchmark
(benchmarks/results/world_outcome_cases.json), with a margin for other CPUs' kernels; fixed seeds."""
import pytest

from benchmarks.world.cases import Case
from benchmarks.world.outcome import CASES

# case 1 in the benchmark (2026-12-07, weights with the vae_detail stage), pose share: full 0.707, no_tuning 0.671,
# retarget_off 0.377, base 0.428, vae_roundtrip (the ceiling) 0.861; background PSNR: full 22.2 dB, no_tuning 20.1 dB
MARGIN = 0.03


@pytest.fixture(scope="module")
def rows():
    case = Case(*CASES[0])
    return {ablation: case.run(ablation) for ablation in ("full", "no_tuning", "retarget_off")}


def test_full_method_puts_the_person_where_the_poses_say(rows):
    assert rows["full"]["pose"] >= 0.707 - MARGIN
    assert rows["full"]["background"] >= 22.2 - 1.0


def test_tuning_moves_case_1_as_the_benchmark_measured(rows):
    # on case 1 tuning adds 0.036 pose share and 2.1 dB of background; over the five cases the pose gain is
    # small (-0.002 to +0.045, mean +0.024): this guards the case-1 effect, it does not claim a general one
    assert rows["no_tuning"]["pose"] == pytest.approx(0.671, abs=MARGIN)
    assert rows["full"]["pose"] - rows["no_tuning"]["pose"] >= 0.036 / 2
    assert rows["full"]["background"] - rows["no_tuning"]["background"] >= 2.1 / 2


def test_retargeting_to_the_trained_body_helps(rows):
    # case 1 gap 0.329; every case of the benchmark agrees (0.206 to 0.428, mean 0.333)
    assert rows["full"]["pose"] - rows["retarget_off"]["pose"] >= 0.329 / 2
