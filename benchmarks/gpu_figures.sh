#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one run, most important first (about 10 minutes on
# one H200): the CUDA tests, the parity check on CUDA (when PARITY_FIXTURES names the folder of
# check_parity.py), then bench_train.py rows per model: U2-Net at 320 -> 288 (batch 12),
# IS-Net at 1024 (batch 8, peak memory with and without activation checkpointing), U2-NetP, and
# the compiled / CUDA-graph rows last (their compilation takes minutes).
# Results: $OUT/log.txt (everything printed) and $OUT/train.jsonl (one line per row).
#   OUT=gpu-figures bash benchmarks/gpu_figures.sh
set -u
OUT=${OUT:-gpu-figures}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
log() { echo "== $(date -u +%T) $*"; }
bench() {  # bench MODEL ROWS
    timeout 300 "$PY" benchmarks/bench_train.py --models "$1" --rows "$2" --rounds 1 --steps 6 \
        --repeats 3 --row-timeout 150 --jsonl "$OUT/train.jsonl"
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
    log "train u2net"; bench u2net official,bf16-cl-gpuaug,fp32,bf16,bf16-gpuaug
    log "train isnet"; bench isnet official,bf16-cl-gpuaug,bf16-ckpt,bf16,fp32
    log "train u2netp"; bench u2netp official,bf16-cl-gpuaug,bf16-graphs
    log "train u2net compiled"; bench u2net bf16-graphs,bf16-compile,16
    log "CUDA test with CUDA graphs"
    timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py -k cuda_graphs
    log "done"
} 2>&1 | tee "$OUT/log.txt"
