"""How long posecrafter/memory.py's GPU memory estimates take at 512x512 px on one CPU thread (README "GPU memory").

    python3 benchmarks/estimates.py                              # every estimate of README's table, in one process
    python3 benchmarks/estimates.py "inversion fp32" --out OUT.json   # only these (a first estimate in its process)

The estimates run one after the other in one process, as the nodes ask for them in one ComfyUI process, each a
first call of its setting (nothing cached for it). The first estimate of a process also pays for building the
fake full-size model and for filling PyTorch's fake-tensor operator cache. Printed per estimate: its bytes (an
estimate must stay the same when only its speed changes) and the CPU seconds of this process
(``time.process_time``; on a shared machine the wall time mostly measures the other programs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from posecrafter import memory  # noqa: E402

SIZE = 512
TUNING = {f"tuning {rule}{' checkpointing' if checkpointing else ''} {name}": (rule, checkpointing, dtype)
          for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
          for rule in ("paper", "clean") for checkpointing in (False, True)}
SAMPLING = {  # frames (the inserted reference included), guidance, window, dtype
    "sampling 17 frames fp32": (17, 1.0, None, torch.float32),
    "sampling 17 frames fp16": (17, 1.0, None, torch.float16),
    "sampling 17 frames cfg 3 fp16": (17, 3.0, None, torch.float16),
    "sampling 101 frames windows 16/4 fp16": (101, 1.0, 16, torch.float16),
    "sampling 101 frames windows 16/4 cfg 3 fp16": (101, 3.0, 16, torch.float16),
    "sampling 101 frames fp32": (101, 1.0, None, torch.float32),
    "sampling 101 frames fp16": (101, 1.0, None, torch.float16),
}
ESTIMATES = {
    **{name: lambda rule=rule, checkpointing=checkpointing, dtype=dtype: memory.tuning_peak(
        8, SIZE, SIZE, rule, checkpointing, dtype) for name, (rule, checkpointing, dtype) in TUNING.items()},
    "inversion fp32": lambda: memory.inversion_peak(SIZE, SIZE, dtype=torch.float32),
    "inversion fp16": lambda: memory.inversion_peak(SIZE, SIZE, dtype=torch.float16),
    **{name: lambda frames=frames, cfg=cfg, window=window, dtype=dtype: memory.sampling_peak(
        frames, SIZE, SIZE, cfg, window, dtype=dtype) for name, (frames, cfg, window, dtype) in SAMPLING.items()},
}


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{models[0] if models else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"estimates to time, in this order (default: all): {list(ESTIMATES)}")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in ESTIMATES]
    if unknown:
        parser.error(f"unknown estimates {unknown}: choose from {list(ESTIMATES)}")
    torch.set_num_threads(1)
    results = []
    for name in args.names or ESTIMATES:
        start = time.process_time()
        estimate = ESTIMATES[name]()
        results.append({"estimate": name, "bytes": estimate, "cpu_s": round(time.process_time() - start, 2)})
        print(f"{name:45s} {estimate / 2**30:6.2f} GiB  {results[-1]['cpu_s']:6.2f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "threads": 1,
                                        "torch": torch.__version__, "size": SIZE, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
