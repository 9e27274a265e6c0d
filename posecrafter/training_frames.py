"""Which frames of the training clip to tune on: the paper's uniform stride (spec 3), or the frames that cover
the target motion best (lowest Video-SIM, spec 5.6) [ours]."""
from __future__ import annotations

import itertools
import math

import numpy as np

from .pose import PoseSequence
from .reference import squared_pose_distances

# Up to this many candidate sets, select_covering_frames tries them all (3 of 10: 120; 4 of 20: 4,845).
EXHAUSTIVE_SETS = 20_000


def uniform_indices(total: int, count: int) -> list[int]:
    """Indices 0, s, 2s, ... of ``count`` frames out of ``total``, with stride s = floor(total / count)."""
    stride = total // count
    return list(range(0, stride * count, stride))


def select_covering_frames(
    training: PoseSequence, target: PoseSequence, count: int, distance: str = "visible"
) -> list[int]:
    """The ``count`` training frames (ascending) whose poses minimise Video-SIM to the target poses: the sum
    over target poses of the squared distance (``reference.pose_distances``) to the nearest chosen pose.

    Exact by trying every set when there are at most ``EXHAUSTIVE_SETS``; otherwise two starts, the greedy set
    (add the frame that lowers Video-SIM most, ``count`` times) and the uniform stride, each improved by single
    swaps (one chosen frame out, another in) while one improves it; the better result wins (a local optimum,
    never worse than the uniform stride). Among sets of equal Video-SIM the one closest to the uniform stride
    wins (sum of squared index differences), so a still clip gives exactly the uniform stride; then the
    earliest. Frames without a person are never chosen.
    """
    if len(training) == 0:
        raise ValueError("training: zero frames; pass the poses of every frame of the training clip")
    if len(target) == 0:
        raise ValueError("target: zero frames; pass the pose sequence the video should follow")
    empty = set(training.empty_frames)
    candidates = np.array([i for i in range(len(training)) if i not in empty])
    if len(candidates) == 0:
        raise ValueError("training: nobody was detected in any frame; use a clip in which the person is visible")
    if not 1 <= count <= len(candidates):
        raise ValueError(
            f"count: {count} frames asked for, but the training clip has {len(candidates)} frames with a "
            f"person (of {len(training)}); choose 1 to {len(candidates)} frames or use a longer clip"
        )
    squared = squared_pose_distances(training, target, distance)[:, candidates]  # [M, C]
    uniform = np.array(uniform_indices(len(training), count))

    def off_uniform(chosen) -> int:
        return int(((np.sort(candidates[list(chosen)]) - uniform) ** 2).sum())

    if math.comb(len(candidates), count) <= EXHAUSTIVE_SETS:
        sets = itertools.combinations(range(len(candidates)), count)
        best = min(sets, key=lambda s: (squared[:, s].min(axis=1).sum(), off_uniform(s), s))
    else:  # from the greedy set and from the uniform stride (when it has a person in every frame)
        starts = [_greedy(squared, count)]
        if set(uniform) <= set(candidates):
            starts.append([int(c) for c in np.searchsorted(candidates, uniform)])
        improved = [_swap_improved(squared, start, off_uniform) for start in starts]
        best = min(improved, key=lambda s: (squared[:, s].min(axis=1).sum(), off_uniform(s)))
    return sorted(int(candidates[c]) for c in best)


def _greedy(squared: np.ndarray, count: int) -> list[int]:
    chosen: list[int] = []
    nearest = np.full(len(squared), np.inf)
    for _ in range(count):
        totals = np.minimum(nearest[:, None], squared).sum(axis=0)
        totals[chosen] = np.inf
        best = int(np.argmin(totals))
        chosen.append(best)
        nearest = np.minimum(nearest, squared[:, best])
    return chosen


def _swap_improved(squared: np.ndarray, chosen: list[int], off_uniform) -> list[int]:
    """Take the best single swap while one lowers (Video-SIM, off_uniform). Every set's Video-SIM is summed
    the same way (a column of ``totals``), so sets of equal poses tie exactly."""
    chosen = list(chosen)
    while True:
        current = best = None
        for slot in range(len(chosen)):
            others = chosen[:slot] + chosen[slot + 1 :]
            rest = squared[:, others].min(axis=1) if others else np.full(len(squared), np.inf)
            totals = np.minimum(rest[:, None], squared).sum(axis=0)  # column c: ``others`` plus frame c
            totals[others] = np.inf
            if current is None:
                current = (totals[chosen[slot]], off_uniform(chosen))
            for candidate in np.flatnonzero(totals == totals.min()):
                key = (totals[candidate], off_uniform(others + [int(candidate)]))
                if key < (current if best is None else best[0]):
                    best = (key, slot, int(candidate))
        if best is None:
            return chosen
        chosen[best[1]] = best[2]
