#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one run, most important first (about 10 minutes on
# one H200): the CUDA tests, the parity check on CUDA (when PARITY_FIXTURES names the folder of
# check_parity.py), then bench_train.py rows per model, every row in windows interleaved with
# the official loop (paired ratios with a 95 % interval): U2-Net at 320 -> 288 (batch 12),
# IS-Net at 1024 (batch 8: peak memory with and without activation checkpointing, the fused
# loss, feature-sync MSE in bf16), U2-NetP, and the compiled / CUDA-graph rows last (their
# compilation takes minutes; IS-Net's with the loss levers).
# Results: $OUT/log.txt (everything printed) and $OUT/train.jsonl (one line per row, with its
# windows, load averages and ratio).
#   OUT=gpu-figures bash benchmarks/gpu_figures.sh
set -u
OUT=${OUT:-gpu-figures}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
log() { echo "== $(date -u +%T) $*"; }
bench() {  # bench MODEL ROWS [TIMEOUT]: the first row is the reference of the ratios
    timeout "${3:-300}" "$PY" benchmarks/bench_train.py --models "$1" --rows "$2" --steps 5 \
        --repeats 6 --row-timeout 240 --jsonl "$OUT/train.jsonl"
}
{
    log "device"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', \
lightning.__version__, torch.cuda.get_device_name(), torch.get_num_threads(), 'threads')"
    log "CUDA tests (without the compiled one)"
    timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "not cuda_graphs"
    if [ -n "${PARITY_FIXTURES:-}" ]; then
        log "parity on CUDA (TF32 off)"
        timeout 120 "$PY" "$PARITY_FIXTURES/check_parity.py" --project --device cuda | tail -4
    fi
    log "train u2net"; bench u2net official,bf16-cl-gpuaug,bf16,fp32
    log "train isnet"; bench isnet official,bf16-cl-gpuaug,bf16-ckpt,bf16-fusedloss,bf16-syncbf16
    log "train u2netp"; bench u2netp official,bf16-cl-gpuaug,bf16-graphs
    log "train isnet compiled"; bench isnet official,bf16-compile-levers,bf16-graphs-levers 420
    log "train u2net compiled"; bench u2net official,bf16-graphs,bf16-compile 360
    log "CUDA test with CUDA graphs"
    timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py -k cuda_graphs
    log "done"
} 2>&1 | tee "$OUT/log.txt"
