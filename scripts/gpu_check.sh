#!/usr/bin/env bash
# The GPU check (docs/speed.md), for one CUDA GPU with no network, ending within 6 minutes:
#   1. calibench against the reference pipeline (calibench bench --against reference) for ce,
#      mixup, rankmixup_mrl and rankmixup_mndcg on resnet50 (cifar10 shape, batch 128) and
#      small_resnet (fashion_mnist, batch 128), in fp32 and bf16;
#      then the fast path (channels last, fused views) on both, for ce and rankmixup_mndcg;
#   2. the fashion preset on the real Fashion-MNIST of .gpu-data/ (`make gpu-data`) for as many
#      epochs as the time left allows, computed from a measured first epoch of ce;
#   3. results/gpu/<date>/: bench JSON and tables, run logs, the fashion store and report,
#      steps.tsv (each step's exit code and seconds) and SUMMARY.md.
# `scripts/gpu_check.sh --rehearsal` takes every step on the CPU with tiny sizes, into
# results/gpu-rehearsal/<date>/ (git-ignored), in about a minute on an idle 2-core machine.
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET (seconds), GPU_CHECK_OUTPUT (folder),
# GPU_DATA_ROOT (default .gpu-data); the budget (default 350 s on the GPU) bounds every step. Where the device tool's $OUT is set, the results folder is
# also packed there (checkpoints left out).
set -uo pipefail # no -e: a failed step is logged and the check goes on with the next one

cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 COLUMNS=220
DATE=$(date -u +%Y-%m-%d)
DATA_ROOT=${GPU_DATA_ROOT:-.gpu-data}
BENCH_METHODS=ce,mixup,rankmixup_mrl,rankmixup_mndcg
FAST_METHODS=ce,rankmixup_mndcg

if [ "${1:-}" = "--rehearsal" ]; then
    MODE=rehearsal
    DEVICE=cpu
    BUDGET=${GPU_CHECK_BUDGET:-240} # a cap: about a minute on an idle 2-core machine
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} # see docs/speed.md: threads on a shared CPU
    RESULTS=${GPU_CHECK_OUTPUT:-results/gpu-rehearsal/$DATE}
    BENCH_CONFIGS="cifar10:small_cnn fashion_mnist:small_cnn"
    BENCH_METHODS=ce,rankmixup_mndcg
    BENCH_ARGS=(--batch-size 8 --steps 1 --blocks 1 --num-workers 1)
    FASHION_METHODS=ce,rankmixup_mndcg
    FASHION_ARGS=(--datasets digits --backbones small_cnn)
    MAX_EPOCHS=1
    KEEP_AFTER_BENCH=90 KEEP_AFTER_FIRST=60 KEEP_AFTER_FASHION=40
    rm -rf "$RESULTS"
elif [ -z "${1:-}" ]; then
    MODE=gpu
    DEVICE=cuda
    BUDGET=${GPU_CHECK_BUDGET:-350}
    RESULTS=${GPU_CHECK_OUTPUT:-results/gpu/$DATE}
    BENCH_CONFIGS="cifar10:resnet50 fashion_mnist:small_resnet"
    BENCH_ARGS=(--batch-size 128 --steps 10 --blocks 3)
    FASHION_METHODS="*"
    FASHION_ARGS=()
    MAX_EPOCHS=30
    KEEP_AFTER_BENCH=120 KEEP_AFTER_FIRST=60 KEEP_AFTER_FASHION=40
else
    echo "usage: scripts/gpu_check.sh [--rehearsal]" >&2
    exit 2
fi

mkdir -p "$RESULTS/logs"
LOG=$RESULTS/logs/gpu_check.log
: >"$RESULTS/steps.tsv"

say() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - SECONDS)); }

# step NAME CAP KEEP LOGFILE COMMAND...: run COMMAND for at most CAP seconds, stopping it KEEP
# seconds before the budget ends (time kept for the steps after it); stdout and stderr to
# LOGFILE; the exit code and seconds to steps.tsv. The summary keeps the last 20 seconds.
step() {
    local name=$1 cap=$2 reserve=$3 out=$4
    shift 4
    local limit=$(($(left) - reserve))
    ((limit > cap)) && limit=$cap
    if ((limit < 5)); then
        say "$name: skipped, $(left)s left"
        printf '%s\tskipped\t0\n' "$name" >>"$RESULTS/steps.tsv"
        return 124
    fi
    say "$name: start, limit ${limit}s: $*"
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >"$out" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - start)) >>"$RESULTS/steps.tsv"
    say "$name: exit $rc after $((SECONDS - start))s"
    return $rc
}

say "GPU check ($MODE) on $DEVICE, budget ${BUDGET}s, writing $RESULTS"

step env 30 $KEEP_AFTER_BENCH "$RESULTS/env.txt" "$PYTHON" -c "
import os, platform, torch
print('date', '$DATE', '| mode $MODE | python', platform.python_version(), '| torch', torch.__version__)
print('cuda', torch.version.cuda, '| available', torch.cuda.is_available(), '| cpus', os.cpu_count())
if torch.cuda.is_available():
    print('gpu', torch.cuda.get_device_name(0), '|', torch.cuda.get_device_properties(0).total_memory >> 30, 'GiB')
"
if [ "$MODE" = gpu ] && ! grep -q "available True" "$RESULTS/env.txt"; then
    say "no CUDA GPU visible: stopping (use --rehearsal on a CPU)"
    exit 1
fi

FASHION_DATA=ok
step data 30 $KEEP_AFTER_BENCH "$RESULTS/logs/data.log" "$PYTHON" -c "
from calibench.plugins import discover_plugins
from calibench.data import load_dataset
discover_plugins()
d = load_dataset('fashion_mnist', '$DATA_ROOT', False, 0)
print('fashion_mnist from $DATA_ROOT:', len(d.train), 'train', len(d.val), 'val', len(d.test), 'test')
" || FASHION_DATA=missing
if [ "$FASHION_DATA" = missing ]; then
    say "Fashion-MNIST not readable from $DATA_ROOT (run make gpu-data and carry .gpu-data)"
fi

for config in $BENCH_CONFIGS; do
    dataset=${config%%:*}
    backbone=${config#*:}
    for precision in fp32 bf16; do
        name=bench-$dataset-$backbone-$precision
        cap=45
        [ "$backbone" = resnet50 ] && cap=70
        step "$name" $cap $KEEP_AFTER_BENCH "$RESULTS/$name.txt" "$PYTHON" -m calibench.cli bench \
            --against reference --dataset "$dataset" --backbone "$backbone" \
            --methods "$BENCH_METHODS" "${BENCH_ARGS[@]}" --device "$DEVICE" \
            --precision "$precision" --fast plain --data-root "$DATA_ROOT" \
            --output "$RESULTS/$name.json"
    done
done

# the fast path (docs/speed.md, "Fast path"): what channels-last layout and fused views add on
# each backbone, to set calibench/training/fast_path.py's CUDA defaults by measurement (compile is left
# out: building the graphs of a ResNet-50 step takes longer than this check can give)
for config in $BENCH_CONFIGS; do
    dataset=${config%%:*}
    backbone=${config#*:}
    precision=bf16
    [ "$backbone" = small_resnet ] && precision=fp32
    for fast in channels_last channels_last,fuse_views; do
        name=bench-$dataset-$backbone-$precision-${fast//,/+}
        step "$name" 45 $KEEP_AFTER_BENCH "$RESULTS/$name.txt" "$PYTHON" -m calibench.cli bench \
            --against reference --dataset "$dataset" --backbone "$backbone" \
            --methods "$FAST_METHODS" "${BENCH_ARGS[@]}" --device "$DEVICE" \
            --precision "$precision" --fast "$fast" --data-root "$DATA_ROOT" \
            --output "$RESULTS/$name.json"
    done
done

# fashion: one measured epoch of ce, then as many epochs of the whole preset as fit
FASHION=(--preset fashion "${FASHION_ARGS[@]}" --device "$DEVICE" --data-root "$DATA_ROOT"
    --output "$RESULTS/fashion")
if [ "$FASHION_DATA" = ok ] || [ "$MODE" = rehearsal ]; then
    if step fashion-first-epoch 90 $KEEP_AFTER_FIRST "$RESULTS/logs/fashion-first-epoch.log" \
        "$PYTHON" -m calibench.cli run "${FASHION[@]}" --methods ce --epochs 1; then
        command_s=$(awk -F'\t' '$1 == "fashion-first-epoch" {print $3}' "$RESULTS/steps.tsv")
        budget=$(($(left) - KEEP_AFTER_FASHION))
        epochs=$("$PYTHON" -m calibench.bench.gpu_check plan --budget "$budget" \
            --command-seconds "$command_s" --store "$RESULTS/fashion" \
            --methods "$FASHION_METHODS" --max-epochs "$MAX_EPOCHS" \
            2>"$RESULTS/fashion-plan.txt") || epochs=1
        echo "Runs still going when the time ran out are missing below." \
            >>"$RESULTS/fashion-plan.txt"
        say "fashion: $epochs epochs per run"
        step fashion 900 $KEEP_AFTER_FASHION "$RESULTS/logs/fashion.log" \
            "$PYTHON" -m calibench.cli run "${FASHION[@]}" --methods "$FASHION_METHODS" \
            --epochs "$epochs"
    fi
    step fashion-report 30 20 "$RESULTS/logs/fashion-report.log" \
        "$PYTHON" -m calibench.cli report --output "$RESULTS/fashion" --format md,csv
else
    echo "Not run: Fashion-MNIST was not readable from $DATA_ROOT." >"$RESULTS/fashion-plan.txt"
fi

say "summary: start"
timeout --kill-after=2 15 "$PYTHON" -m calibench.bench.gpu_check summary "$RESULTS" \
    >"$RESULTS/logs/summary.log" 2>&1
say "summary: exit $?"
say "done in ${SECONDS}s: $RESULTS/SUMMARY.md"

if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    tar -czf "$OUT/gpu-check-$MODE-$DATE.tar.gz" --exclude='*.pt' -C "$(dirname "$RESULTS")" \
        "$(basename "$RESULTS")" && cp "$RESULTS/SUMMARY.md" "$OUT/" 2>/dev/null
fi
exit 0
