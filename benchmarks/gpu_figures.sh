#!/usr/bin/env bash
# The GPU figures of issue 24 in one call (one H200: at most BUDGET seconds, default 530, so it
# fits a 10-minute device command with room to spare). Stages run in order of importance; each
# is stopped at min(its cap, the budget left), and a stage that no longer fits is skipped and
# named ("SKIPPED"), never silently dropped:
#   1. tests/test_cuda.py, all of it (the checkpointing and CUDA-graph tests included)
#   2. IS-Net phase 2 at 1024, batch 8, eager rows: official (the reference), bf16, bf16
#      channels_last gpu_aug (the best row so far), and the loss levers fused loss
#      (model.fused_loss) and feature-sync MSE in bf16 (model.sync_dtype=bfloat16)
#   3. U2-Net at 320 -> 288, batch 12: official, bf16 cl gpu_aug, and that row with CUDA graphs
#      (model.compile=reduce-overhead) and with torch.compile
#   4. IS-Net compiled: official, bf16 cl gpu_aug + compile + both loss levers, bf16 + CUDA
#      graphs + both loss levers
#   5. the parity check on CUDA, when PARITY_FIXTURES names the folder of check_parity.py
# Every bench_train.py row runs in windows interleaved with the official loop (6 paired windows
# of 3 steps after 3 warm-up steps: compilation and CUDA-graph recording happen there) and is
# appended to $OUT/train.jsonl as soon as it finishes (windows, load, ratio with its interval),
# so a stage stopped by its cap still leaves the rows it finished. Everything printed goes to
# $OUT/log.txt too.
#   OUT=gpu-figures bash benchmarks/gpu_figures.sh            # on the GPU machine
#   bash benchmarks/gpu_figures.sh --dry-run                  # anywhere: print the plan, check
#                                                             # the row keys and the tests exist
set -u
DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: [OUT=dir] [BUDGET=seconds] bash $0 [--dry-run]" >&2; exit 2 ;;
esac
OUT=${OUT:-gpu-figures}
PY=${PY:-python3}
BUDGET=${BUDGET:-530}
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
START=$SECONDS
FAILED=()
log() { echo "== $(date -u +%T) +$((SECONDS - START))s $*"; }

stage() {  # stage NAME CAP COMMAND...: run COMMAND for at most min(CAP, budget left) seconds
    local name=$1 cap=$2 left
    shift 2
    left=$((BUDGET - (SECONDS - START)))
    [ "$cap" -gt "$left" ] && cap=$left
    if [ "$DRY" = 1 ]; then
        echo "stage $name (cap ${cap} s): $*"
        return 0
    fi
    if [ "$cap" -lt 30 ]; then
        log "SKIPPED $name: ${left} s of the ${BUDGET} s budget left"
        FAILED+=("$name (skipped)")
        return 0
    fi
    log "$name (cap ${cap} s): $*"
    timeout "$cap" "$@"
    local rc=$?
    [ "$rc" = 124 ] && log "$name: stopped at its cap of ${cap} s (rows finished before are in train.jsonl)"
    [ "$rc" != 0 ] && FAILED+=("$name (exit $rc)")
    return 0
}

# what every bench_train.py call shares (the ratios are against its first row, official)
BENCH=("$PY" benchmarks/bench_train.py --device cuda --steps 3 --repeats 6 --row-timeout 240
       --jsonl "$OUT/train.jsonl")

ISNET_EAGER=official,bf16,bf16-cl-gpuaug,bf16-fusedloss,bf16-syncbf16
U2NET=official,bf16-cl-gpuaug,bf16-cl-gpuaug-graphs,bf16-cl-gpuaug-compile
ISNET_COMPILED=official,bf16-cl-gpuaug-compile-levers,bf16-graphs-levers

plan() {
    stage "CUDA tests" 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
    stage "train isnet eager levers" 150 "${BENCH[@]}" --models isnet --rows "$ISNET_EAGER"
    stage "train u2net 288" 150 "${BENCH[@]}" --models u2net --rows "$U2NET"
    # what is left of the budget (compilation takes most of it)
    stage "train isnet compiled levers" 240 "${BENCH[@]}" --models isnet --rows "$ISNET_COMPILED"
    if [ -n "${PARITY_FIXTURES:-}" ]; then
        stage "parity on CUDA (TF32 off)" 60 "$PY" "$PARITY_FIXTURES/check_parity.py" --project \
            --device cuda
    fi
}

if [ "$DRY" = 1 ]; then
    echo "budget ${BUDGET} s; stages in order (a cap is cut to the budget left when it runs):"
    plan
    # the rows and tests the plan names must exist (no GPU needed)
    known=$("$PY" benchmarks/bench_train.py --list-rows | awk '{print $1}')
    for key in $(echo "$ISNET_EAGER,$U2NET,$ISNET_COMPILED" | tr , ' '); do
        echo "$known" | grep -qx -- "$key" || { echo "unknown bench_train.py row: $key" >&2; exit 1; }
    done
    n=$("$PY" -m pytest -q -p no:cacheprovider --collect-only tests/test_cuda.py | grep -c '::')
    [ "$n" -gt 0 ] || { echo "tests/test_cuda.py: no tests collected" >&2; exit 1; }
    echo "dry run ok: every row is known to bench_train.py, tests/test_cuda.py holds $n tests"
    exit 0
fi

mkdir -p "$OUT"
{
    log "device"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', \
lightning.__version__, torch.cuda.get_device_name(), torch.get_num_threads(), 'threads')"
    plan
    log "done in $((SECONDS - START)) s; not complete: ${FAILED[*]:-none}"
} 2>&1 | tee "$OUT/log.txt"
