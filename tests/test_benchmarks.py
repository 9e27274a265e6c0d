"""benchmarks/gpu.sh: its CPU dry mode (tiny models, 1 step) runs every part and writes the JSON and table.

This checks that the script works, not how fast anything is: speed and memory figures live in the benchmark."""
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("memory_in_video_length", "per_frame_step", "sampling", "tuning", "precision", "layout_and_compile")


def test_gpu_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")], check=True)


def test_gpu_script_dry_run_measures_every_part(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    failed = {part: report[part]["error"] for part in PARTS if isinstance(report[part], dict) and "error" in report[part]}
    assert not failed
    assert [r["frames"] for r in report["memory_in_video_length"]["runs"]] == [3, 5]
    assert [(r["frames"], r["windows"]) for r in report["sampling"]] == [(3, False), (3, True)]
    assert {(r["update_rule"], r["gradient_checkpointing"]) for r in report["tuning"]} == {
        ("paper", False), ("paper", True), ("clean", False), ("clean", True)}
    assert report["per_frame_step"]["posecrafter_s"] > 0 and "comfyui_core_s" not in report["per_frame_step"]
    assert report["layout_and_compile"]["channels_last"]["seconds"] > 0
    table = (tmp_path / "gpu.md").read_text()
    assert "ratio PoseCrafter / diffusers" in table and "Slope:" in table and "channels-last" in table


def test_tables_print_the_estimate_beside_each_measured_peak():
    """gpu.sh --estimate: the estimator's figure and measured / estimate beside the peak, or why it failed."""
    from benchmarks import run

    assert run._peak({"peak_memory_gb": 5.5, "estimate_gb": 5.0}) == "5.50 (estimate 5.00, ratio 1.100)"
    assert run._peak({"peak_memory_gb": 5.5}) == "5.50"
    failed = run.estimate_gb(lambda: 1 / 0)
    assert run._peak({"peak_memory_gb": 5.5, **failed}) == "5.50 (estimate failed: ZeroDivisionError: division by zero)"
    assert run.estimate_gb(lambda frames: frames * 2**30, 3) == {"estimate_gb": 3.0}
