#!/usr/bin/env bash
# The one device script of issues 7 and 21 (see benchmarks/README.md). From the repository root:
#
#     bash benchmarks/gpu_run.sh                      # on a GPU machine (CUDA)
#     bash benchmarks/gpu_run.sh --device cpu --tiny  # the same code end to end on a CPU, tiny networks
#
# It measures, per workload, the published loop (`baseline`), what the library runs by
# default (`default`: compiled where compile="auto" says so), the library's `fast` preset and
# the `bf16` preset, with the issue's keys (device, speedup, peak_mem_ratio, fast_speedup,
# default_path, max_abs_diff, compile_s, predicted_peak_gib, measured_peak_gib).
#
# Installs the carried wheels (.whl/: diffusers and what it needs that the device lacks),
# runs the smoke step and every GPU measurement (benchmarks/bench.py --smoke), then, if
# enough of the time budget is left, the torch.compile stage in its own process, and
# prints the markdown table last. Results land in $OUT (bench.json, bench.md, logs),
# rewritten after every stage, so a timeout keeps what finished.
#
# After the main run: benchmarks/gpu_pipeline_check.py (correctness on tiny models, when
# present) if 40 s are left, at most 90 s; then benchmarks/memory_check.py (the memory model's
# predicted vs measured peaks, a simulated smaller card) if 60 s are left, at most 150 s.
#
# Knobs (environment): BENCH_TOTAL_S (whole script, default 210), BENCH_OPTIONAL_S (the
# main run skips optional stages after this many seconds, default 140), BENCH_COMPILE
# (0 to skip the compile stage), BENCH_COMPILE_MIN_S (seconds that must be left to try
# it, default 80), BENCH_PIPELINE_CHECK (0 to skip the pipeline check), BENCH_MEMORY_CHECK
# (0 to skip the memory check), BENCH_ARGS (extra arguments for the main run).
set -u -o pipefail

START=$(date +%s)
TOTAL=${BENCH_TOTAL_S:-210}
# the device arguments of every stage: the command line's, else the GPU
DEVICE_ARGS=("$@")
[ ${#DEVICE_ARGS[@]} -eq 0 ] && DEVICE_ARGS=(--device cuda)
SMOKE=--smoke
case " ${DEVICE_ARGS[*]} " in *" --tiny "*) SMOKE="";; esac
OUT=${OUT:-$PWD/benchmarks/results/local}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# the baseline, ours and the decoders allocate very different shapes in one process
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

left() { echo $(( TOTAL - ($(date +%s) - START) )); }
limit() { local l; l=$(( $(left) - 5 )); [ "$l" -lt 10 ] && l=10; echo "$l"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "[gpu_run] installing the carried wheels failed"; exit 3; }
else
  echo "[gpu_run] no .whl/ here: using the installed packages"
fi
export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 || echo "no GPU: ${DEVICE_ARGS[*]}"; } | tee "$OUT/gpu.txt"
echo "[gpu_run] setup took $(( $(date +%s) - START )) s; $(left) s of $TOTAL s left"

# shellcheck disable=SC2086  # BENCH_ARGS is a word list on purpose
timeout --signal=INT --kill-after=10 "$(limit)" \
  python3 benchmarks/bench.py "${DEVICE_ARGS[@]}" $SMOKE --budget-s "${BENCH_OPTIONAL_S:-140}" --out "$OUT" \
  ${BENCH_ARGS:---skip uniform ablation} \
  2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
echo "[gpu_run] main run exit $rc after $(( $(date +%s) - START )) s"

# the pipeline correctness check (another script, tiny models) when present and time allows
case " ${DEVICE_ARGS[*]} " in *" cuda "*) ;; *) BENCH_PIPELINE_CHECK=0;; esac  # a CUDA check
if [ -f benchmarks/gpu_pipeline_check.py ] && [ "${BENCH_PIPELINE_CHECK:-1}" = 1 ] && [ "$(left)" -ge 40 ]; then
  l=$(limit); [ "$l" -gt 90 ] && l=90
  timeout --signal=INT --kill-after=10 "$l" \
    python3 benchmarks/gpu_pipeline_check.py "${DEVICE_ARGS[0]}" "${DEVICE_ARGS[1]:-cuda}" --out "$OUT" 2>&1 \
    | tee "$OUT/pipeline_check.log"
  echo "[gpu_run] pipeline check exit ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s"
else
  echo "[gpu_run] pipeline check skipped ($(left) s left)"
fi

# the memory model against the card (issue 22): predicted vs measured peaks, and a simulated
# smaller card running the settings chosen for it (--card-gib, default 12)
if [ -f benchmarks/memory_check.py ] && [ "${BENCH_MEMORY_CHECK:-1}" = 1 ] && [ "$(left)" -ge 60 ]; then
  l=$(limit); [ "$l" -gt 150 ] && l=150
  timeout --signal=INT --kill-after=10 "$l" \
    python3 benchmarks/memory_check.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/memory_check.log"
  echo "[gpu_run] memory check exit ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s"
else
  echo "[gpu_run] memory check skipped ($(left) s left)"
fi

if [ "$rc" -ne 2 ] && [ "${BENCH_COMPILE:-1}" = 1 ] && [ "$(left)" -ge "${BENCH_COMPILE_MIN_S:-80}" ]; then
  timeout --signal=INT --kill-after=10 "$(limit)" \
    python3 benchmarks/bench.py "${DEVICE_ARGS[@]}" --compile --workloads lr192x352 --out "$OUT" \
    2>&1 | tee "$OUT/compile.log"
  echo "[gpu_run] compile stage exit ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s"
else
  echo "[gpu_run] compile stage skipped ($(left) s left, main exit $rc)"
fi

echo
cat "$OUT/bench.md" 2>/dev/null || echo "[gpu_run] no bench.md was written"
exit "$rc"
