"""Time of pose retargeting for 1,000 frames (README "Pose retargeting").

A DWPose-like whole-body sequence: the real mediapipe landmarks of tests/data repeated to 1,000 frames, with
2 px jitter and 10% of the points dropped at random, retargeted onto the rescaled copy. Prints the best of
5 runs per mode, with and without smoothing, and the node's preview rendering apart.

    python3 benchmarks/retarget.py
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from posecrafter.pose import from_pose_keypoint, to_pose_keypoint  # noqa: E402
from posecrafter.retarget import retarget_poses  # noqa: E402
from posecrafter.skeleton import render_skeleton  # noqa: E402

FRAMES = 1000
RUNS = 5


def driving_sequence(poses, frames):
    rng = np.random.default_rng(0)
    index = np.arange(frames) % len(poses)
    points = poses.points[index] + rng.normal(0, 2, (frames, *poses.points.shape[1:]))
    scores = np.where(rng.random((frames, poses.points.shape[1])) < 0.1, 0.0, poses.scores[index])
    return replace(poses, points=points, scores=scores)


def best_of(runs, function):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    record = json.loads((ROOT / "tests" / "data" / "astronaut_mediapipe_poses.json").read_text())
    driving = driving_sequence(from_pose_keypoint(record["poses"]), FRAMES)
    training = from_pose_keypoint(record["rescaled_poses"])
    print(f"{FRAMES} frames, {platform.processor() or platform.machine()}, numpy {np.__version__}; best of {RUNS}")
    for mode, smoothing in (("bones", 0.0), ("bones", 0.5), ("global", 0.0)):
        seconds = best_of(RUNS, lambda: retarget_poses(driving, training, mode=mode, smoothing=smoothing))
        print(f"retarget_poses mode={mode} smoothing={smoothing}: {seconds:.3f} s")
    result = retarget_poses(driving, training)
    print(f"to_pose_keypoint: {best_of(RUNS, lambda: to_pose_keypoint(result.poses)):.3f} s")
    pose_keypoint = to_pose_keypoint(driving)
    print(f"from_pose_keypoint: {best_of(RUNS, lambda: from_pose_keypoint(pose_keypoint)):.3f} s")
    seconds = best_of(1, lambda: [render_skeleton(result.poses, f, 256, 256) for f in range(FRAMES)])
    print(f"node preview, one 256x256 panel per frame: {seconds:.3f} s")


if __name__ == "__main__":
    main()
