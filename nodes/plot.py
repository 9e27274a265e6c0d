"""Line plots as IMAGEs, drawn with OpenCV (no plotting library needed): the tuner's loss curve and the
Evaluate node's per-frame metrics."""
from dataclasses import dataclass

import cv2
import numpy as np
import torch

WIDTH, HEIGHT = 640, 360  # one panel
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 30, 40
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, GREY, BLUE = (0, 0, 0), (170, 170, 170), (20, 60, 200)  # RGB
PART_COLOURS = {"all": BLACK, "body": BLUE, "face": (220, 120, 0), "hands": (0, 150, 60)}
PSNR_COLOUR = (170, 30, 150)


@dataclass(frozen=True)
class Series:
    """One line: values at x = start, start + 1, ...; non-finite values leave a gap."""

    values: np.ndarray
    colour: tuple
    label: str = ""
    thickness: int = 1
    start: int = 0


def _text(canvas, text, origin, scale=0.4, colour=BLACK):
    cv2.putText(canvas, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def draw_panel(canvas, top, series, title, x_label, x_count, from_zero=False, empty_message="no data"):
    """Draw `series` over x = 0..x_count-1 into the panel of `canvas` (RGB uint8) starting at row `top`.
    The y range spans the finite values (and 0 when `from_zero`); labelled series get a legend."""
    x0, x1 = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    y0, y1 = top + MARGIN_TOP, top + HEIGHT - MARGIN_BOTTOM
    cv2.rectangle(canvas, (x0, y0), (x1, y1), BLACK, 1)
    _text(canvas, title, (x0, y0 - 10), 0.5)
    _text(canvas, x_label, ((x0 + x1) // 2 - 15, top + HEIGHT - 8), 0.45)
    finite = [v for s in series for v in np.asarray(s.values, np.float64) if np.isfinite(v)]
    if not finite:
        _text(canvas, empty_message, (x0 + 10, (y0 + y1) // 2), 0.45)
        return
    lo, hi = min(finite + [0.0] if from_zero else finite), max(finite)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5

    def to_px(i, v):
        x = x0 + (x1 - x0) * (i / max(x_count - 1, 1))
        y = y1 - (y1 - y0) * ((v - lo) / (hi - lo))
        return int(round(x)), int(round(y))

    for line in series:
        values = np.asarray(line.values, np.float64)
        segment = []
        for i, v in enumerate(list(values) + [np.nan]):  # the trailing NaN closes the last segment
            if np.isfinite(v):
                segment.append(to_px(line.start + i, v))
                continue
            if len(segment) == 1:
                cv2.circle(canvas, segment[0], 3, line.colour, -1)
            elif segment:
                cv2.polylines(canvas, [np.array(segment, np.int32)], False, line.colour, line.thickness, cv2.LINE_AA)
            segment = []
    for v in (lo, hi):
        _text(canvas, f"{v:.3g}", (4, to_px(0, v)[1] + 4))
    _text(canvas, "0", (x0 - 4, y1 + 16))
    _text(canvas, str(x_count - 1), (x1 - 20, y1 + 16))
    for row, line in enumerate(s for s in series if s.label):
        y = y0 + 14 + 16 * row
        cv2.line(canvas, (x1 - 110, y - 4), (x1 - 85, y - 4), line.colour, 2, cv2.LINE_AA)
        _text(canvas, line.label, (x1 - 78, y), 0.4, line.colour)


def _to_image(canvas):
    return torch.from_numpy(canvas).float().div(255.0).unsqueeze(0)


def loss_curve_image(losses, title="training loss"):
    """IMAGE [1,H,W,3] in 0..1: the per-step losses (grey) and their running mean (blue) against the step."""
    canvas = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    series = np.asarray(losses, dtype=np.float64)
    lines = [Series(series, GREY)]
    if series.size:
        window = max(1, len(series) // 20)
        lo = np.nanmin(series) if np.isfinite(series).any() else 0.0
        mean = np.convolve(np.nan_to_num(series, nan=lo), np.ones(window) / window, mode="valid")
        lines.append(Series(mean, BLUE, thickness=2, start=window - 1))
    draw_panel(canvas, 0, lines, title, "step", len(series))
    return _to_image(canvas)


def evaluation_image(pose_error_per_part, psnr_per_frame=None, psnr_message="no ground truth: PSNR skipped"):
    """IMAGE [1, 2*HEIGHT, WIDTH, 3] in 0..1: MSE-P per frame for each part (a gap where a part was not
    measured), and below it PSNR per frame (or `psnr_message` when there is none)."""
    canvas = np.full((2 * HEIGHT, WIDTH, 3), 255, np.uint8)
    frames = len(next(iter(pose_error_per_part.values())))
    parts = [Series(values, PART_COLOURS[part], part, 2 if part == "all" else 1)
             for part, values in sorted(pose_error_per_part.items(), key=lambda item: item[0] == "all")]  # "all" on top
    draw_panel(canvas, 0, parts, "pose error MSE-P per frame (lower is better)", "frame", frames, from_zero=True,
               empty_message="no pose error measured: no person found in any generated frame")
    psnr_lines = [] if psnr_per_frame is None else [Series(psnr_per_frame, PSNR_COLOUR, "PSNR dB", 2)]
    draw_panel(canvas, HEIGHT, psnr_lines, "PSNR per frame against the ground truth (higher is better)", "frame",
               frames, empty_message=psnr_message)
    return _to_image(canvas)
