#!/usr/bin/env bash
# The GPU check (issue 14): the CUDA tests, the attention backends at changing lengths, and W-S
# training throughput at batch 8 and at a batch that fills the GPU, in fp32 and bf16, eager and
# compiled with static mask shapes (mask.fixed_sizes); under 8 minutes, ending with one table.
#
#   bash benchmarks/gpu_check.sh                       # on a machine with CUDA, from anywhere
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh  # the plumbing on a CPU: tiny workload,
#                                                      # batches 8 and 16, no CUDA-only steps
#
# Environment:
#   PYTHON               interpreter (default: .venv/bin/python if present, else python3)
#   GPU_CHECK_DEVICE     cuda (default) or cpu
#   GPU_CHECK_BIG_BATCH  the large batch (default: estimated from batch 8's peak GPU memory, for
#                        about 60 % of the GPU's memory, a power of two in [16, 1024])
#   GPU_CHECK_COMPILE    1 (default): also the compiled rows; 0: eager only
#   GPU_CHECK_BUDGET_S   total seconds (default 470); a step that would overrun is cut short and
#                        its rows are reported as missing
#   GPU_CHECK_OUT        folder for the logs and JSON rows (default: a new temporary folder)
#   GPU_CHECK_SLOW       multiply every step's time limit (default 1; e.g. 20 for a CPU dry run
#                        on a busy machine, with GPU_CHECK_BUDGET_S raised to match)
#
# Every step's output goes to a log in GPU_CHECK_OUT; a failing step does not stop the others.
# The exit status is 0 only if every step ran and passed.

set -u -o pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
COMPILE=${GPU_CHECK_COMPILE:-1}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
SLOW=${GPU_CHECK_SLOW:-1}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT"
DEADLINE=$((SECONDS + BUDGET))
FAILED=0

# step NAME LIMIT_S COMMAND...: run with a time limit (never past the deadline); log, status.
step() {
    local name=$1 limit=$(($2 * SLOW))
    shift 2
    local left=$((DEADLINE - SECONDS))
    if ((left < 15)); then
        echo "skipped: out of time" >"$OUT/$name.status"
        echo "[gpu_check] $name: skipped (out of time)"
        FAILED=1
        return
    fi
    ((limit > left)) && limit=$left
    echo "[gpu_check] $name (limit ${limit} s)"
    local start=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    if ((rc == 0)); then
        echo "ok in $((SECONDS - start)) s" >"$OUT/$name.status"
    elif ((rc == 124 || rc == 137)); then
        echo "timed out after ${limit} s" >"$OUT/$name.status"
        FAILED=1
    else
        echo "failed (exit $rc) after $((SECONDS - start)) s" >"$OUT/$name.status"
        FAILED=1
    fi
    echo "[gpu_check] $name: $(cat "$OUT/$name.status")"
}

# throughput NAME LIMIT_S BATCH COMPILED: W-S (or the tiny workload on a CPU), fp32 and bf16.
throughput() {
    local name=$1 limit=$2 batch=$3 compiled=$4
    local extra=()
    [[ $compiled == on ]] && extra=(--set mask.fixed_sizes=true)
    step "$name" "$limit" "$PY" benchmarks/throughput.py --device "$DEVICE" --workload "$WORKLOAD" \
        --set "data.batch_size=$batch" ${extra[@]+"${extra[@]}"} --dtypes fp32,bf16 \
        --compiled "$compiled" \
        --steps 10 --extract-repeats 2
    grep -h '^{' "$OUT/$name.log" >"$OUT/$name.jsonl" 2>/dev/null || true
}

if [[ $DEVICE == cpu ]]; then
    WORKLOAD=quick
else
    WORKLOAD=W-S
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "[gpu_check] no CUDA device visible to $PY; use GPU_CHECK_DEVICE=cpu for a dry run"
        exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        >"$OUT/gpu.txt" 2>&1 || true
    step tests 150 "$PY" -m pytest -m gpu tests/gpu -q -p no:randomly -p no:cacheprovider
    step attention 60 "$PY" benchmarks/attention_cuda.py --calls 20
fi

# eager at batch 8 first: its peak memory sizes the large batch
throughput b8_eager 100 8 off
if [[ -n "${GPU_CHECK_BIG_BATCH:-}" ]]; then
    BIG=$GPU_CHECK_BIG_BATCH
elif [[ $DEVICE == cpu ]]; then
    BIG=16
else
    BIG=$("$PY" - "$OUT/b8_eager.jsonl" <<'EOF'
import json, sys, torch
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
peak = max((r.get("peak_cuda_mb") or 0.0) for r in rows) if rows else 0.0
total = torch.cuda.get_device_properties(0).total_memory / 2**20
per_image = peak / 8 if peak > 0 else 512.0  # peak/8 over-counts the weights: a safe estimate
big = 16
while big * 2 * per_image <= 0.6 * total and big < 1024:
    big *= 2
print(big)
EOF
)
    [[ $BIG =~ ^[0-9]+$ ]] || BIG=64
fi
echo "[gpu_check] large batch: $BIG"
throughput big_eager 140 "$BIG" off
if [[ $COMPILE == 1 ]]; then
    throughput big_compiled 220 "$BIG" on
    throughput b8_compiled 200 8 on
fi

"$PY" - "$OUT" "$DEVICE" "$BIG" <<'EOF'
import json, sys
from pathlib import Path

import torch

from ijepa.hardware import cpu_name

out, device, big = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def status(name):
    path = out / f"{name}.status"
    return path.read_text().strip() if path.exists() else "not run"


gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else cpu_name()
print(f"\nGPU check: {gpu} | torch {torch.__version__} | device {device} | logs in {out}")
if device == "cuda":
    tests = out / "tests.log"
    summary = tests.read_text().strip().splitlines()[-1] if tests.exists() else ""
    print(f"pytest -m gpu tests/gpu: {status('tests')}; {summary}")
    att = out / "attention.log"
    if att.exists():
        rows = [json.loads(x) for x in att.read_text().splitlines() if x.startswith("{")]
        cells = [f"{r['dtype']} {r['backend']} {r['ms'] if r['ms'] is None else round(r['ms'], 3)}"
                 for r in rows]
        print(f"attention_cuda.py ms/call: {status('attention')}; " + ", ".join(cells))
print()
print("| batch | dtype | mode | img/s | step ms | warm-up s | peak GPU MB | peak RSS MB "
      "| GFLOP/step | MFU (of bf16 / fp32 peak) | tokens ctx/tgt | status |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, batch, mode in [("b8_eager", 8, "eager"), ("b8_compiled", 8, "compiled, fixed sizes"),
                          ("big_eager", big, "eager"),
                          ("big_compiled", big, "compiled, fixed sizes")]:
    path = out / f"{name}.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    by_dtype = {r["dtype"]: r for r in rows}
    for dtype in ("fp32", "bf16"):
        r = by_dtype.get(dtype)
        if r is None:
            print(f"| {batch} | {dtype} | {mode} | - | - | - | - | - | - | - | - | {status(name)} |")
            continue
        cuda_mb = "-" if r.get("peak_cuda_mb") is None else f"{r['peak_cuda_mb']:.0f}"
        print(f"| {r['batch']} | {dtype} | {mode} | {r['img_per_s']:.1f} | "
              f"{1e3 * r['step_s']:.1f} | {r['compile_s']:.1f} | {cuda_mb} | "
              f"{r['peak_rss_mb']:.0f} | {r['gflop_per_step']:.1f} | "
              f"{r['mfu_bf16']:.3f} / {r['mfu_fp32']:.3f} | "
              f"{r['context_tokens']}/{r['target_tokens']} | {status(name)} |")
EOF
echo "[gpu_check] total $SECONDS s"
exit $FAILED
