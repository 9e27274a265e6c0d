"""Time of reference-frame selection (Eq. 5 with either distance) and covering-frame selection for a long
driving video, on the synthetic dancer of ``benchmarks/poses.py`` with DWPose-like noise. CPU only, numpy.

    python3 benchmarks/selection.py                   # 1,000 target poses, a 300-frame training clip (10 s)
    python3 benchmarks/selection.py --targets 5000 --training 900

Prints one line per measurement (the best of ``--repeat`` runs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.poses import dancing_person, dwpose_noise  # noqa: E402
from posecrafter.pose import PoseSequence  # noqa: E402
from posecrafter.reference import select_reference_frame, video_sim  # noqa: E402
from posecrafter.training_frames import select_covering_frames, uniform_indices  # noqa: E402


def best_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=1000, help="target (driving) poses")
    parser.add_argument("--training", type=int, default=300, help="frames of the training clip (30 fps)")
    parser.add_argument("--frames", type=int, default=8, help="training frames to keep (Select Frames)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    clip = dwpose_noise(dancing_person(args.training, seed=0), seed=1)
    target = dwpose_noise(dancing_person(args.targets, seed=2), seed=3)
    kept = uniform_indices(args.training, args.frames)
    selected = PoseSequence(clip.points[kept], clip.scores[kept], 512, 512)
    print(f"{args.targets} target poses, training clip of {args.training} frames, {args.frames} kept")
    for distance in ("visible", "paper"):
        seconds = best_time(lambda: select_reference_frame(selected, target, distance), args.repeat)
        print(f"reference frame ({distance}) among the {args.frames} kept frames: {seconds:.3f} s")
    seconds = best_time(lambda: select_covering_frames(clip, target, args.frames), args.repeat)
    print(f"covering frames ({args.frames} of {args.training}, visible): {seconds:.3f} s")
    chosen = select_covering_frames(clip, target, args.frames)
    for name, indices in (("uniform", kept), ("cover", chosen)):
        frames = PoseSequence(clip.points[indices], clip.scores[indices], 512, 512)
        print(f"Video-SIM (visible) of the {name} frames {indices}: {video_sim(frames, target):.4f}")


if __name__ == "__main__":
    main()
