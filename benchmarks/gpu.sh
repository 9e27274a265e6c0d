#!/usr/bin/env bash
# The GPU benchmark of README "Performance" in one command, needing nothing but the checkout (random weights
# from the shipped configs, nothing downloaded) and a Python with torch (CUDA), diffusers, transformers,
# safetensors, opencv and pytest (tests/sd15_random.py writes the random weights). About 3-5 minutes on one
# H100/H200; stopped at 8 minutes in any case, keeping every part measured by then (run.py writes its JSON
# after each part).
#
#   bash benchmarks/gpu.sh [OUTDIR]            # fp16, 512 px, on the GPU; writes OUTDIR/gpu.json and gpu.md
#   bash benchmarks/gpu.sh --dry-run [OUTDIR]  # the same parts on the CPU with the tests' tiny models, 1 step,
#                                              # torch.compile left out (2+ minutes of compiling on a CPU):
#                                              # checks that the script works (seconds to a minute), not speed
#
# OUTDIR defaults to benchmarks/results. gpu.md is the table for README "Performance"; gpu.log the full output.
# With COMFYUI_PATH set to a ComfyUI checkout (and PYTHON to a Python with its requirements), ComfyUI's core
# path joins the per frame-step comparison (run.py --comfyui), as on the CPU.
set -u
cd "$(dirname "$0")/.."

dry=0
if [ "${1:-}" = "--dry-run" ]; then
    dry=1
    shift
fi
out=${1:-benchmarks/results}
mkdir -p "$out"
python=${PYTHON:-python3}

if [ "$dry" = 1 ]; then
    device=cpu
    options=(--device cpu --tiny --size 64 --steps 1 --frames 2 --memory-frames 2 4 --tune-steps 1 --channels-last)
    limit=300
else
    device=cuda
    # Parts in run.py order: ratio to diffusers (16 frames, 10 steps, best of 3 alternating); peak memory with
    # windows 16/4 for M = 16, 100, 1000 (1 step); sampling M = 16, 64, 100 plain and windowed (10 steps each,
    # 50-step seconds extrapolated); tuning 8-frame clips, both rules, with/without gradient checkpointing
    # (10 steps each); fp16/bf16 deviation; channels-last and torch.compile against the default (last: compiling
    # is the slowest and least certain part). --estimate: posecrafter/memory.py's estimate and measured / estimate
    # beside every peak (the first part's peaks also hold the stock UNet + ControlNet, 2.4 GB in fp16).
    options=(--device cuda --dtype fp16 --size 512 --steps 10 --frames 16 64 100 --memory-frames 16 100 1000
             --tune-steps 10 --channels-last --compile --estimate)
    if [ -n "${COMFYUI_PATH:-}" ]; then
        options+=(--comfyui "$COMFYUI_PATH")
    fi
    limit=480
fi

if ! "$python" -c "import torch, sys; sys.exit(0 if '$device' == 'cpu' or torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: no CUDA GPU visible to $python (torch $("$python" -c 'import torch; print(torch.__version__)' 2>&1))" >&2
    exit 2
fi
missing=$("$python" -c "
import importlib.util
print(' '.join(m for m in ('torch', 'diffusers', 'transformers', 'safetensors', 'cv2', 'numpy', 'pytest')
               if importlib.util.find_spec(m) is None))")
if [ -n "$missing" ]; then
    echo "gpu.sh: $python lacks: $missing (pip install -r requirements.txt -r tests/requirements.txt)" >&2
    exit 2
fi

echo "gpu.sh: $python benchmarks/run.py ${options[*]} --out $out/gpu.json (stopped after ${limit} s)"
timeout --signal=INT --kill-after=20 "$limit" "$python" benchmarks/run.py "${options[@]}" --out "$out/gpu.json" \
    2>&1 | tee "$out/gpu.log"
status=${PIPESTATUS[0]}
if [ "$status" = 124 ] || [ "$status" = 130 ]; then
    echo "gpu.sh: stopped after ${limit} s; $out/gpu.json holds the parts measured by then" >&2
fi
[ -f "$out/gpu.md" ] && cat "$out/gpu.md"
exit "$status"
