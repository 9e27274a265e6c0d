"""The outcome benchmark: ``python benchmarks/world/outcome.py`` (about 35 minutes on 2 CPU cores).

Runs every row of ``ABLATIONS`` on the cases kept apart from training (seeds below 1,000; the models were trained
on seeds from 1,000,000 up), prints the table of means over the cases, and writes
``benchmarks/results/world_outcome.json`` ({ablation: {metric: mean over the cases}}), the per-case scores
(``world_outcome_cases.json``), the Markdown table (``world_outcome.md``) and a picture strip of the first case
(``world_strip.jpg``: training frames, driving poses, ground truth and three generated rows).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.world import models
from benchmarks.world.cases import ABLATIONS, SIZE, TRAINING_FRAMES, TUNING_FRAMES, Case, check_ablation
from posecrafter.skeleton import render_skeleton
from posecrafter.training_frames import uniform_indices

RESULTS = Path(__file__).resolve().parents[1] / "results"
# (identity seed, background seed, training motion, driving motion): five people and rooms the models never saw,
# each driven by another motion kind.
CASES = ((1, 101, "dance", "wave"), (2, 102, "walk", "hands"), (3, 103, "hands", "dance"),
         (4, 104, "wave", "turn_head"), (5, 105, "turn_head", "walk"))
COLUMNS = ("cases", "pose", "pose_torso", "pose_arms", "pose_legs", "pose_head", "pose_hands", "pose_face",
           "identity", "background", "flicker", "seam", "seconds")
STRIP_ROWS = ("ground_truth", "full", "no_tuning", "retarget_off")
STRIP_FRAMES = 8


def mean_scores(per_case: list[dict[str, dict]]) -> dict[str, dict[str, float]]:
    """{ablation: {metric: mean over the cases that ran it, "cases": how many did}}; a metric only some of them
    report is left out."""
    table = {}
    for ablation in ABLATIONS:
        rows = [case[ablation] for case in per_case if ablation in case]
        if rows:
            keys = [key for key in rows[0] if all(key in row for row in rows)]  # rows saved by an older scorer
            table[ablation] = {key: float(np.mean([row[key] for row in rows])) for key in keys}
            table[ablation]["cases"] = len(rows)
    return table


def markdown(table: dict[str, dict[str, float]], cases: int) -> str:
    columns = [c for c in COLUMNS if any(c in row for row in table.values())]
    lines = [f"Means over the {cases} case(s) run (cases: how many ran the row). pose: share of each part's pixels "
             "in its colour (higher is better); identity: RGB distance of part colours (lower is better); "
             "background: PSNR dB (capped at 60); flicker: frame-to-frame change over the ground truth's; seam: "
             "change across window boundaries over change within windows.", "",
             "| row | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for ablation, row in table.items():
        cells = [("" if c not in row else f"{row[c]:.0f}" if c in ("seconds", "cases") else f"{row[c]:.3g}")
                 for c in columns]
        lines.append(f"| {ablation} | " + " | ".join(cells) + " |")
    edit = table.get("attribute_edit")
    if edit:
        lines += ["", "Attribute edit (prompt names another shirt colour): torso colour distance to the new colour "
                  f"{edit['identity_torso']:.1f}, to the tuned person's shirt {edit['identity_torso_original']:.1f}; "
                  f"legs {edit['identity_legs']:.1f}, head {edit['identity_head']:.1f} (against the tuned person)."]
    return "\n".join(lines) + "\n"


def _label(image: np.ndarray, text: str) -> np.ndarray:
    margin = np.full((image.shape[0], 120, 3), 255, np.uint8)
    cv2.putText(margin, text, (4, image.shape[0] // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([margin, image], axis=1)


def picture_strip(case: Case) -> np.ndarray:
    """Rows of STRIP_FRAMES frames: the tuned training frames, the driving poses, then the generated rows."""
    uniform = uniform_indices(TRAINING_FRAMES, TUNING_FRAMES)
    picks = np.linspace(0, len(case.videos["full"]) - 1, STRIP_FRAMES).round().astype(int)
    driving = case.driving(len(case.videos["full"]))
    rows = [("training", case.training_frames[uniform]),
            ("driving poses", np.stack([render_skeleton(driving, int(i), SIZE, SIZE) for i in picks]))]
    rows += [(name, case.videos[name][picks]) for name in STRIP_ROWS if name in case.videos]
    return np.concatenate([_label(np.concatenate(list(frames), axis=1), name) for name, frames in rows], axis=0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--cases", type=int, default=len(CASES), help=f"how many of the {len(CASES)} cases to run")
    parser.add_argument("--ablations", default=",".join(ABLATIONS), help="comma-separated rows to run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--weights", type=Path, default=models.WEIGHTS, help="the world's trained weights")
    parser.add_argument("--fresh", action="store_true",
                        help="run the --ablations rows again, all of them by default (without it, the rows --out "
                             "already holds for these weights are kept); other saved rows stay")
    args = parser.parse_args(argv)
    if not 1 <= args.cases <= len(CASES):
        parser.error(f"--cases must be between 1 and {len(CASES)}, got {args.cases}")
    args.ablations = [a.strip() for a in args.ablations.split(",") if a.strip()]
    for ablation in args.ablations:
        try:
            check_ablation(ablation)
        except ValueError as error:
            parser.error(f"--ablations: {error}")
    return args


def weights_fingerprint(weights: Path) -> dict[str, str]:
    """SHA-256 of each weight file: results are only resumed for the weights that made them."""
    return {name: hashlib.sha256((weights / name).read_bytes()).hexdigest() for name in models.WEIGHT_FILES}


def saved_results(out: Path, fingerprint: dict[str, str]) -> list[dict[str, dict]]:
    """The per-case rows a previous run of the same weights saved in ``out`` (an empty dict per case when none)."""
    path = out / "world_outcome_cases.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("weights") != fingerprint:
        return [{} for _ in CASES]
    rows = {tuple(entry["case"]): entry["scores"] for entry in saved["cases"]}
    return [rows.get(tuple(case), {}) for case in CASES]


def write_results(per_case: list[dict[str, dict]], fingerprint: dict[str, str], out: Path) -> str:
    """The means, the per-case scores and the Markdown table so far (after every row, so a stopped run keeps
    the rows it finished); returns the Markdown."""
    done = [scores for scores in per_case if scores]
    table = mean_scores(done)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world_outcome.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "world_outcome_cases.json").write_text(json.dumps({"weights": fingerprint, "cases": [
        {"case": list(case), "scores": scores} for case, scores in zip(CASES, per_case) if scores]}, indent=2) + "\n")
    text = markdown(table, len(done))
    (out / "world_outcome.md").write_text(text)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    models.WEIGHTS = args.weights
    started = time.time()
    fingerprint = weights_fingerprint(args.weights)
    per_case = saved_results(args.out, fingerprint)
    if args.fresh:
        per_case = [{row: scores for row, scores in rows.items() if row not in args.ablations} for rows in per_case]
    todo = [[a for a in args.ablations if a not in per_case[number]] for number in range(args.cases)]
    remaining = sum(map(len, todo))
    if remaining < args.cases * len(args.ablations):
        print(f"resuming: {args.cases * len(args.ablations) - remaining} row(s) already in {args.out} for these "
              "weights (--fresh runs them again)")
    bar = tqdm(total=remaining, desc="outcome", unit="row")
    text = write_results(per_case, fingerprint, args.out)
    for number, rows in enumerate(todo):
        if not rows:
            continue
        case = Case(*CASES[number])
        for ablation in rows:
            bar.set_postfix(case=number + 1, row=ablation)
            per_case[number][ablation] = case.run(ablation)
            text = write_results(per_case, fingerprint, args.out)
            bar.update()
        if number == 0 and all(row in case.videos for row in STRIP_ROWS):
            cv2.imwrite(str(args.out / "world_strip.jpg"), picture_strip(case)[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
    bar.close()
    print(text)
    print(f"{time.time() - started:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
