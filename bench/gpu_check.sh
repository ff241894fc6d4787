#!/usr/bin/env bash
# The CUDA backend against the CPU backend on a lent GPU, in one call that cannot fail on setup.
#
# What it checks (every check on its own; a failure is written to $OUT and the run goes on):
#   1. op by op: dgemma_cuda_opcheck (bench/cuda_opcheck.cpp) runs every op of backend.h on the CUDA
#      and CPU backends on fresh random inputs, each weight type (F32 F16 BF16 Q8_0 Q4_K Q5_K Q6_K)
#      and cache type, odd shapes, outputs poisoned; the sampler bit for bit. Also times each op.
#   2. the models: tests/test_cuda.py (logits of tiny/mini files per type, prefill past the sliding
#      window, two committed canvases, self-conditioning on and off; generate = CPU tokens; batches;
#      draw tables; refused types);
#   3. compute-sanitizer memcheck of a mini-model prefill and denoise, when the tool is there;
#   4. bench/gpu_step.py: a medium step and prefill on CUDA (tiled and reference kernels) and on the
#      CPU, and the device time per op (the speed baseline);
#   5. dgemma_cuda_opcheck --bench-full: the ops of one step at the 26B-A4B shapes, timed.
# On an H200 (2026-11-27) steps 1-3 took about 2 minutes with one kernel set; the op check now also
# runs the matrix ops with the reference and tensor-core sets (about a minute more), 4-5 about 1.
# The end-to-end benchmark at the full shapes is a call of its own (minutes: a 16 GB file, prompts
# of 8192 tokens): bench/gpu_check.sh --bench-gpu; the no-GPU mode runs bench_gpu.py --dry-run.
# It ends with one table (bench/gpu_check_report.py): checks passed/failed per op and type, CUDA
# times, model tests. Everything goes to $OUT (bench/results/local when $OUT is unset).
#
# Usage
#   bench/gpu_check.sh --build   here, on a machine with nvcc: builds build/gpu for sm_90a and packs
#                                build/gpu-pack (libdgemma.so, libdgemma_cuda.so, dgemma_cuda_opcheck,
#                                COMMIT). Nothing is built on the device.
#   bench/gpu_check.sh           on the device: run(command="bench/gpu_check.sh", carry=["build/gpu-pack"],
#                                timeout_s=540); well under 8 minutes on an H100. Its output is more than
#                                the 8 files a run brings back: write it to another OUT and tar it into $OUT
#                                (O=$OUT; OUT=/tmp/gc bench/gpu_check.sh; tar czf $O/gc.tgz -C /tmp/gc .).
#   bench/gpu_check.sh --no-gpu  CI: --build, then every step up to the GPU checks, then exit 0 saying so.
#   bench/gpu_check.sh --bench-gpu  on the device, a call of its own: bench/bench_gpu.py at the full
#                                shapes (JSON in $OUT/bench_gpu.json; commit it as bench/results/<card>-<date>.json).
#   bench/gpu_check.sh --all     on the device: the checks, then bench_gpu.py at the full shapes without
#                                the transformers peer, in one call (about 450 s on an H200: one machine
#                                start instead of two; timeout_s=590).
#   bench/gpu_check.sh --quick   on the device, for a short lease: the op check of the tensor-core set
#                                only (--sets tensor), the model tests, memcheck, --bench-full (no gpu_step.py),
#                                and bench_gpu.py's 512-token and step rows, op by op, with the int8 tiles,
#                                with them and flash attention, and with CUDA graphs too, and the device time
#                                per op of one canvas under int8 + flash (no quantized-fragment
#                                rows or op checks: run 11 measured them), and the offload rows at a 12 GB cap, both ways
#                                (no 16 GB rows, no 8192-token prefill, no peer); about 380 s on an H200 by
#                                session 11's estimate (run 11: 263 s with the 12 GB rows alone; timeout_s=440,
#                                and `timeout 420` inside).
#                                Every mode also runs the op checks of each opt-in: DGEMMA_CUDA_QMMA=1 (Q4_K and
#                                Q5_0 on quantized fragments), DGEMMA_CUDA_INT8=1 (Q4_K, Q6_K, Q5_0, Q8_0 on int8
#                                tensor cores), DGEMMA_CUDA_FLASH=1 (the attention as flash
#                                attention) and DGEMMA_CUDA_WGMMA=1 (the vocabulary products on Hopper's
#                                warpgroup instructions: wgmma-active, matmul-wide, soft_embed-wide), and
#                                --bench-full with QMMA, then with INT8 and FLASH, then with WGMMA (not under
#                                --quick, whose bench_gpu rows measure int8 + flash + wgmma end to end instead
#                                of int8 alone); ~20 s each.
#   bench/gpu_check.sh --int8    on the device, a second call after a fix: the int8 products and flash attention
#                                alone (their op checks, test_cuda.py -k 'int8 or flash', --bench-full with and
#                                without them, bench_gpu.py's 512-token and step rows op by op and under the
#                                opt-ins, CUDA graphs with them too); about 250 s (timeout_s=330).
#   bench/gpu_check.sh --ncu     on the device: Nsight Compute on one run of each op at the 26B shapes
#                                (--bench-full --reps 0): the tensor-core kernels, the router's logits and
#                                the attention tiles, with the speed-of-light, occupancy, warp-state and
#                                memory sections, to $OUT/ncu.txt; then the quantized fragments' kernels
#                                (DGEMMA_CUDA_QMMA=1) to $OUT/ncu_qmma.txt and the int8 tiles' (DGEMMA_CUDA_INT8=1)
#                                to $OUT/ncu_int8.txt (timeout_s=380). Needs ncu's counters
#                                (a Firecracker machine, KINDS.md).
# After a device run, commit what came back (summary.txt, opcheck.txt, failures.txt, the logs) under
# bench/results/<card>-<date>-<commit>/ (run.txt names all three).
# `dgemma_cuda_opcheck --self-test` rehearses the op harness with the CPU in place of CUDA (~4 min on 2 cores).
#
# The device's python3 (3.12; KINDS.md, 2026-11: numpy, pytest, tokenizers, jinja2, safetensors
# present) lacks cffi and pycparser: their wheels (bench/wheels, 0.3 MB) are installed into /tmp/site
# when `import cffi` fails. The library is loaded through DGEMMA_LIBRARY; nothing is pip-installed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PACK=$ROOT/build/gpu-pack
MODE=device
case "${1:-}" in
  --build) MODE=build ;;
  --no-gpu) MODE=no-gpu ;;
  --bench-gpu) MODE=bench-gpu ;;
  --all) MODE=all ;;
  --quick) MODE=quick ;;
  --ncu) MODE=ncu ;;
  --int8) MODE=int8 ;;
  "") ;;
  *) echo "usage: bench/gpu_check.sh [--build | --no-gpu | --bench-gpu | --all | --quick | --ncu | --int8]" >&2; exit 2 ;;
esac
OUT=${OUT:-$ROOT/bench/results/local}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: > "$LOG"
say() { echo "[$SECONDS s] $*" | tee -a "$LOG"; }  # seconds since the start: what each step costs a lease

build() {
  say "== building build/gpu (CUDA for sm_90a) and packing build/gpu-pack"
  local t0=$SECONDS
  cmake -S . -B build/gpu -G Ninja -DDGEMMA_CUDA=ON -DDGEMMA_CUDA_ARCHS=90a >>"$LOG" 2>&1 &&
    cmake --build build/gpu >>"$LOG" 2>&1 || { say "FAILED: the CUDA build (see $LOG)"; exit 1; }
  rm -rf "$PACK" && mkdir -p "$PACK"
  cp build/gpu/libdgemma.so build/gpu/libdgemma_cuda.so build/gpu/dgemma_cuda_opcheck "$PACK/"
  git rev-parse HEAD > "$PACK/COMMIT" 2>/dev/null || echo unknown > "$PACK/COMMIT"
  say "built in $((SECONDS - t0)) s; pack: $(du -sh "$PACK" | cut -f1) ($(ls "$PACK" | tr '\n' ' '))"
}

if [ "$MODE" = build ] || [ "$MODE" = no-gpu ]; then
  build
  [ "$MODE" = build ] && exit 0
fi

# --- the pack and the Python environment (the same on every machine)
for f in libdgemma.so libdgemma_cuda.so dgemma_cuda_opcheck COMMIT; do
  [ -e "$PACK/$f" ] || { say "FAILED: $PACK/$f is missing: run bench/gpu_check.sh --build here and carry build/gpu-pack"; exit 1; }
done
# The package's converter is a link to convert/ that git ignores, so a copied tree may lack it.
[ -e python/dgemma/convert ] || ln -s ../../convert python/dgemma/convert
export DGEMMA_LIBRARY=$PACK/libdgemma.so DGEMMA_DEV=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$ROOT/python${PYTHONPATH:+:$PYTHONPATH}
if ! python3 -c "import cffi" 2>/dev/null; then
  say "== installing the carried wheels (cffi, pycparser) into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site bench/wheels/*.whl \
    >>"$LOG" 2>&1 || { say "FAILED: installing bench/wheels"; exit 1; }
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
python3 -c "import dgemma, numpy; from dgemma import _native" >>"$LOG" 2>&1 ||
  { say "FAILED: the package does not import with $DGEMMA_LIBRARY (see $LOG)"; exit 1; }
{
  echo "commit: $(cat "$PACK/COMMIT")"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "python: $(python3 --version 2>&1)"
  echo "card: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
} | tee "$OUT/run.txt" | tee -a "$LOG"

# --- the GPU check
if [ "$MODE" = no-gpu ] || ! nvidia-smi -L >/dev/null 2>&1; then
  "$PACK/dgemma_cuda_opcheck" --out "$OUT" >>"$LOG" 2>&1
  rc=$?
  [ $rc -eq 3 ] || { say "FAILED: without a GPU the op check should report 'no CUDA device' (exit 3), got $rc"; exit 1; }
  # The CPU reference must not keep what a freed weight left (run 5's 110 false failures): the op
  # check's reload row, with a second CPU backend in CUDA's place.
  "$PACK/dgemma_cuda_opcheck" --self-test --only matmul-reload --out "$OUT" >>"$LOG" 2>&1 ||
    { say "FAILED: dgemma_cuda_opcheck --self-test --only matmul-reload (see $LOG)"; exit 1; }
  python3 bench/bench_gpu.py --dry-run --profile default,int8+flash --json "$OUT/bench_gpu_dry.json" >>"$LOG" 2>&1 ||
    { say "FAILED: bench/bench_gpu.py --dry-run (see $LOG)"; exit 1; }
  say "no GPU here: built, packed, imported, bench_gpu.py rehearsed; stopping before the GPU checks (exit 0)"
  exit 0
fi

if [ "$MODE" = bench-gpu ]; then
  say "== bench/bench_gpu.py: the full 26B-A4B shapes at Q4_K_M (a 16 GB file in /tmp), floors, transformers"
  DGEMMA_BENCH_TMP=/tmp python3 bench/bench_gpu.py --config full --type Q4_K_M --json "$OUT/bench_gpu.json" 2>&1 |
    tee "$OUT/bench_gpu.txt"
  exit "${PIPESTATUS[0]}"
fi

if [ "$MODE" = int8 ]; then
  # The int8 products and flash attention alone, for a second call on the same lease after a fix: their
  # op checks, the model tests that run them, --bench-full with and without them, and bench_gpu.py's
  # step rows op by op and with both opt-ins, with and without CUDA graphs (about 250 s on an H200 by
  # session 11's estimate: the 16 GB file is written anew; timeout_s=330).
  say "== int8 products and flash attention: op checks, model tests, bench-full both ways, bench_gpu step rows"
  for job in "INT8 int8 matmul" "INT8 int8 matmul-int8" "INT8 int8 matmul-shared-input" "INT8 int8 matmul_softcap" "INT8 int8 moe" "FLASH flash attention" \
             "WGMMA wgmma wgmma-active" "WGMMA wgmma matmul-wide" "WGMMA wgmma soft_embed-wide"; do
    read -r var tag op <<<"$job"
    mkdir -p "$OUT/$tag-$op"
    env "DGEMMA_CUDA_$var=1" timeout 60 "$PACK/dgemma_cuda_opcheck" --sets tensor --only "$op" --out "$OUT/$tag-$op" \
      >"$OUT/$tag-$op/opcheck.log" 2>&1
    say "$tag op check ($op) exit code $?"
  done
  timeout 120 python3 -m pytest -q -rfEs -p no:cacheprovider tests/test_cuda.py -k "int8 or flash or wgmma" >"$OUT/test_cuda_int8.log" 2>&1
  say "pytest -k 'int8 or flash or wgmma' exit code $? ($OUT/test_cuda_int8.log)"
  timeout 90 "$PACK/dgemma_cuda_opcheck" --bench-full >"$OUT/bench_full.txt" 2>&1
  DGEMMA_CUDA_INT8=1 DGEMMA_CUDA_FLASH=1 timeout 90 "$PACK/dgemma_cuda_opcheck" --bench-full >"$OUT/bench_full_int8.txt" 2>&1
  DGEMMA_CUDA_WGMMA=1 timeout 90 "$PACK/dgemma_cuda_opcheck" --bench-full >"$OUT/bench_full_wgmma.txt" 2>&1
  say "bench-full exit code $? (bench_full.txt, bench_full_int8.txt, bench_full_wgmma.txt)"
  DGEMMA_BENCH_TMP=/tmp timeout 200 python3 bench/bench_gpu.py --config full --type Q4_K_M --no-peer --prompts 512 \
    --offload-caps '' --env-rows int8+flash,int8+flash+graph,int8+flash+wgmma --profile int8+flash --json "$OUT/bench_gpu.json" \
    >"$OUT/bench_gpu.txt" 2>&1
  say "bench_gpu exit code $?"
  tail -n 3 "$OUT"/int8-*/opcheck.log "$OUT"/flash-*/opcheck.log
  echo "== bench-full, the default tensor set, then with int8 tiles and flash attention, then with warpgroup products (the tensor column)"
  cat "$OUT/bench_full.txt" "$OUT/bench_full_int8.txt" "$OUT/bench_full_wgmma.txt" "$OUT/bench_gpu.txt"
  exit 0
fi

if [ "$MODE" = ncu ]; then
  say "== Nsight Compute: one run of each op at the 26B-A4B shapes (dgemma_cuda_opcheck --bench-full --reps 0)"
  NCU_SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
    --section MemoryWorkloadAnalysis --section SchedulerStats --section SourceCounters"
  # shellcheck disable=SC2086  # the sections are words
  timeout 200 ncu --clock-control none -k regex:'mma_kernel|route_logits|attention_tile|soft_probs|group_kernel|position_kernel|add_rmsnorm|rmsnorm_rope' $NCU_SECTIONS \
    "$PACK/dgemma_cuda_opcheck" --bench-full --reps 0 >"$OUT/ncu.txt" 2>&1
  say "ncu exit code $? (report: $OUT/ncu.txt)"
  # the quantized fragments (opt-in) on their own
  # shellcheck disable=SC2086
  DGEMMA_CUDA_QMMA=1 timeout 80 ncu --clock-control none -k regex:'qmma|block_sums' $NCU_SECTIONS \
    "$PACK/dgemma_cuda_opcheck" --bench-full --reps 0 >"$OUT/ncu_qmma.txt" 2>&1
  say "ncu (DGEMMA_CUDA_QMMA=1) exit code $? (report: $OUT/ncu_qmma.txt)"
  # the int8 tiles, their activation quantizer and flash attention (opt-in)
  # shellcheck disable=SC2086
  DGEMMA_CUDA_INT8=1 DGEMMA_CUDA_FLASH=1 timeout 100 ncu --clock-control none -k regex:'i8_|flash' $NCU_SECTIONS \
    "$PACK/dgemma_cuda_opcheck" --bench-full --reps 0 >"$OUT/ncu_int8.txt" 2>&1
  say "ncu (DGEMMA_CUDA_INT8=1 DGEMMA_CUDA_FLASH=1) exit code $? (report: $OUT/ncu_int8.txt)"
  exit 0
fi

if [ "$MODE" = quick ]; then
  say "== 1. op by op, the tensor-core set only (dgemma_cuda_opcheck --sets tensor)"
  timeout 120 "$PACK/dgemma_cuda_opcheck" --sets tensor --out "$OUT" >"$OUT/opcheck.log" 2>&1
else
  say "== 1. op by op (dgemma_cuda_opcheck)"
  timeout 240 "$PACK/dgemma_cuda_opcheck" --out "$OUT" >"$OUT/opcheck.log" 2>&1
fi
say "op check exit code $? (0: all passed, 1: failures in $OUT/failures.txt)"
# The opt-in product kernels of the tensor set, each its matrix rows: QMMA (Q4_K and Q5_0 on quantized
# fragments) and INT8 (Q4_K, Q6_K, Q5_0 and Q8_0 on int8 tensor cores, bit for bit against the CPU's
# portable integer dot products in its matmul-int8 rows; its matmul and moe rows against the CPU backend
# on the same quantized weights, at 1e-5 and 1e-4) and FLASH (the attention as flash attention).
# --quick leaves out the quantized fragments (run 11 measured them: slower than the bf16 tiles).
say "== 1b. the opt-ins: DGEMMA_CUDA_QMMA=1 (matmul, matmul-shared-input, moe; not under --quick), DGEMMA_CUDA_INT8=1 (matmul, matmul-int8, matmul-shared-input, matmul_softcap, moe), DGEMMA_CUDA_FLASH=1 (attention), DGEMMA_CUDA_WGMMA=1 (wgmma-active, matmul-wide, soft_embed-wide)"
OPT_INS=("QMMA qmma matmul matmul-shared-input moe" "INT8 int8 matmul matmul-int8 matmul-shared-input matmul_softcap moe" "FLASH flash attention"
         "WGMMA wgmma wgmma-active matmul-wide soft_embed-wide")
[ "$MODE" = quick ] && OPT_INS=("${OPT_INS[@]:1}")
for variant in "${OPT_INS[@]}"; do
  read -r var tag ops <<<"$variant"
  for op in $ops; do
    mkdir -p "$OUT/$tag-$op"
    env "DGEMMA_CUDA_$var=1" timeout 60 "$PACK/dgemma_cuda_opcheck" --sets tensor --only "$op" --out "$OUT/$tag-$op" \
      >"$OUT/$tag-$op/opcheck.log" 2>&1
    say "$tag op check ($op) exit code $? (failures in $OUT/$tag-$op/failures.txt)"
  done
done

say "== 2. the models (tests/test_cuda.py)"
timeout 200 python3 -m pytest -q -rfEs -p no:cacheprovider tests/test_cuda.py --deselect tests/test_cuda.py::test_every_op_and_type_matches_the_cpu_backend --junitxml="$OUT/test_cuda.xml" \
  >"$OUT/test_cuda.log" 2>&1
say "pytest exit code $?"

say "== 3. compute-sanitizer memcheck (mini, prefill and denoise)"
if command -v compute-sanitizer >/dev/null 2>&1; then
  timeout 75 compute-sanitizer --tool memcheck --error-exitcode 9 python3 - >"$OUT/memcheck.log" 2>&1 <<'PY'
import numpy as np, tempfile, dgemma
from dgemma.convert.random_model import write_random_gguf
with tempfile.TemporaryDirectory() as d:
    write_random_gguf(f"{d}/m.gguf", "mini", "Q8_0", seed=1)
    with dgemma.Model(f"{d}/m.gguf", device="cuda") as m:
        s = m.session(); s.prefill(list(range(1, 90)))
        z = s.denoise(np.arange(m.config.canvas_length)); s.denoise(np.arange(m.config.canvas_length), z)
        m.generate([1, 2, 3], max_new_tokens=m.config.canvas_length, seed=1)
PY
  say "memcheck exit code $? (0: clean, 9: errors in $OUT/memcheck.log)"
else
  echo "compute-sanitizer: not found" > "$OUT/memcheck.log"
  say "compute-sanitizer not found: memcheck not run"
fi

if [ "$MODE" != quick ]; then  # --quick: bench_gpu.py's profile at the full shapes says more, and the lease is short
  say "== 4. one step and a prefill, CUDA against the CPU (bench/gpu_step.py, medium)"
  timeout 150 python3 bench/gpu_step.py --config medium --steps 5 --profile >"$OUT/gpu_step.txt" 2>&1
  say "gpu_step exit code $?"
fi

say "== 5. the ops of one step at the 26B-A4B shapes (dgemma_cuda_opcheck --bench-full)"
timeout 120 "$PACK/dgemma_cuda_opcheck" --bench-full >"$OUT/bench_full.txt" 2>&1
say "bench-full exit code $?"
if [ "$MODE" != quick ]; then
  DGEMMA_CUDA_QMMA=1 timeout 120 "$PACK/dgemma_cuda_opcheck" --bench-full >"$OUT/bench_full_qmma.txt" 2>&1
  say "bench-full (DGEMMA_CUDA_QMMA=1) exit code $?"
fi
DGEMMA_CUDA_INT8=1 DGEMMA_CUDA_FLASH=1 timeout 120 "$PACK/dgemma_cuda_opcheck" --bench-full >"$OUT/bench_full_int8.txt" 2>&1
say "bench-full (DGEMMA_CUDA_INT8=1 DGEMMA_CUDA_FLASH=1) exit code $?"
if [ "$MODE" != quick ]; then  # --quick measures the warpgroup products end to end only (bench_gpu's env rows)
  DGEMMA_CUDA_WGMMA=1 timeout 120 "$PACK/dgemma_cuda_opcheck" --bench-full >"$OUT/bench_full_wgmma.txt" 2>&1
  say "bench-full (DGEMMA_CUDA_WGMMA=1) exit code $?"
fi

if [ "$MODE" = all ]; then
  say "== 6. bench/bench_gpu.py at the full shapes, Q4_K_M, no transformers peer (JSON in $OUT/bench_gpu.json)"
  DGEMMA_BENCH_TMP=/tmp timeout 300 python3 bench/bench_gpu.py --config full --type Q4_K_M --no-peer \
    --env-rows int8,int8+flash,int8+flash+graph,int8+flash+wgmma --profile default,int8+flash --json "$OUT/bench_gpu.json" >"$OUT/bench_gpu.txt" 2>&1
  say "bench_gpu exit code $?"
elif [ "$MODE" = quick ]; then
  say "== 6. bench/bench_gpu.py at the full shapes, Q4_K_M: 512-token prefill, the step rows, offload at 12 GB (JSON in $OUT/bench_gpu.json)"
  DGEMMA_BENCH_TMP=/tmp timeout 360 python3 bench/bench_gpu.py --config full --type Q4_K_M --no-peer --prompts 512 \
    --offload-caps 12 --env-rows int8+flash,int8+flash+graph,int8+flash+wgmma --profile int8+flash --json "$OUT/bench_gpu.json" \
    >"$OUT/bench_gpu.txt" 2>&1
  say "bench_gpu exit code $?"
fi


python3 bench/gpu_check_report.py "$OUT" | tee "$OUT/summary.txt"
[ -f "$OUT/gpu_step.txt" ] && cat "$OUT/gpu_step.txt"
cat "$OUT/bench_full.txt"
if [ -f "$OUT/bench_full_qmma.txt" ]; then
  echo "== with DGEMMA_CUDA_QMMA=1 (the tensor column: Q4_K and Q5_0 on quantized fragments)"
  cat "$OUT/bench_full_qmma.txt"
fi
echo "== with DGEMMA_CUDA_INT8=1 DGEMMA_CUDA_FLASH=1 (the tensor column: Q4_K, Q6_K, Q5_0 and Q8_0 on int8 tensor cores, the attention rows flash attention)"
cat "$OUT/bench_full_int8.txt"
if [ -f "$OUT/bench_full_wgmma.txt" ]; then
  echo "== with DGEMMA_CUDA_WGMMA=1 (the tensor column: lm_head and soft_embed on warpgroup products)"
  cat "$OUT/bench_full_wgmma.txt"
fi
[ "$MODE" = all ] || [ "$MODE" = quick ] && cat "$OUT/bench_gpu.txt"
exit 0
