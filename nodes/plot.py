"""The tuner's loss curve as an IMAGE, drawn with OpenCV (no plotting library needed)."""
import cv2
import numpy as np
import torch

WIDTH, HEIGHT = 640, 360
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 30, 40
FONT = cv2.FONT_HERSHEY_SIMPLEX


def loss_curve_image(losses, title="training loss"):
    """IMAGE [1,H,W,3] in 0..1: the per-step losses (grey) and their running mean (blue) against the step."""
    canvas = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    x0, x1 = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    y0, y1 = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 0, 0), 1)
    cv2.putText(canvas, title, (x0, y0 - 10), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "step", ((x0 + x1) // 2 - 15, HEIGHT - 8), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    values = np.asarray(losses, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        n = len(losses)

        def to_px(i, v):
            x = x0 + (x1 - x0) * (i / max(n - 1, 1))
            y = y1 - (y1 - y0) * ((v - lo) / (hi - lo))
            return int(round(x)), int(round(y))

        series = np.asarray(losses, dtype=np.float64)
        window = max(1, n // 20)
        mean = np.convolve(np.nan_to_num(series, nan=lo), np.ones(window) / window, mode="valid")
        for data, start, colour, thickness in ((series, 0, (170, 170, 170), 1), (mean, window - 1, (200, 60, 20), 2)):
            points = [to_px(start + i, v) for i, v in enumerate(data) if np.isfinite(v)]
            if len(points) == 1:
                cv2.circle(canvas, points[0], 3, colour, -1)
            elif points:
                cv2.polylines(canvas, [np.array(points, np.int32)], False, colour, thickness, cv2.LINE_AA)
        for v in (lo, hi):
            cv2.putText(canvas, f"{v:.4g}", (4, to_px(0, v)[1] + 4), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, "0", (x0 - 4, y1 + 16), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, str(n - 1), (x1 - 20, y1 + 16), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    # canvas is BGR in OpenCV's colour order; IMAGE is RGB
    rgb = canvas[:, :, ::-1].copy()
    return torch.from_numpy(rgb).float().div(255.0).unsqueeze(0)
