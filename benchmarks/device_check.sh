#!/usr/bin/env bash
# One pass on a GPU machine: the GPU tests and the benchmarks that decide the open speed and soak
# targets, in one command (a device machine is lent for minutes at a time: few, full runs).
#
#   bash benchmarks/device_check.sh [PART ...]     PARTs: tests readahead matrix soak (default: all four),
#                                                   reconfigure (not in the default: it may hang, bounded),
#                                                   fixed-target (the same with fixed output surfaces: which frames differ),
#                                                   tests-fixed / matrix-fixed (the GPU tests / the matrix with the
#                                                   reconfigure and fixed output surfaces on; the matrix into fixed/),
#                                                   soak-start / soak-collect (a soak longer than one call)
#
# Run it in a checkout (or an archive of one) with the wheels installed or on PYTHONPATH. Results go
# to $RESULTS (default: $OUT/res when $OUT is set, else /tmp/asyncdecode-check): each part's log, JSON
# and table, and SUMMARY.txt (the commit, the machine, each part's exit status and seconds).
# Settings (environment):
#   SOAK_MIN (6)       soak minutes;  SOAK_SAMPLE_S (20)  seconds between soak samples
#   SOAK_WARM_S        seconds of load before the soak's first sample (default: one sample interval)
#   MATRIX_SETS (all)  matrix_bench --sets;  MATRIX_BUDGET (285)  its --budget in seconds
#   MATRIX_CACHE_ROUNDS (1)  matrix_bench --cache-rounds (the cache cells' median over rounds)
#   DATA (/tmp/asyncdecode-data)  where the benchmarks make their videos (kept between parts)
#   SOAK_DIR (/tmp/asyncdecode-soak)  soak-start's run: its log, PREFIX.partial.json while it runs, results
#   SOAK_WAIT_S (540)  soak-collect waits at most this long for the soak to end, then copies what exists
# A soak longer than one call: `soak-start` runs soak.py in its own process session (it outlives the
# call while the machine is held), and each later call's `soak-collect` copies its samples so far
# (soak_cuda.partial.json) or, once done, its results into $RESULTS. The machine must stay held: each
# call has to follow the last within the machine's warm time, or the soak is lost with it.
set -uo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests readahead matrix soak)
res=${RESULTS:-${OUT:+$OUT/res}}
res=${res:-/tmp/asyncdecode-check}
data=${DATA:-/tmp/asyncdecode-data}
soak_dir=${SOAK_DIR:-/tmp/asyncdecode-soak}
soak=(python3 benchmarks/soak.py --device cuda --minutes "${SOAK_MIN:-6}" --sample-s "${SOAK_SAMPLE_S:-20}"
      ${SOAK_WARM_S:+--warm-s "$SOAK_WARM_S"} --data "$data/matrix")
matrix=(python3 benchmarks/matrix_bench.py --device cuda --data "$data/matrix" --budget "${MATRIX_BUDGET:-285}"
        --seconds 2.5 --steady 15 ${MATRIX_SETS:+--sets "$MATRIX_SETS"}
        ${MATRIX_CACHE_ROUNDS:+--cache-rounds "$MATRIX_CACHE_ROUNDS"})
mkdir -p "$res" "$data"
summary="$res/SUMMARY.txt"
{
  echo "tree: $(cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$summary" 2>&1

run_part() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$summary"
  "$@" > "$res/$name.log" 2>&1
  local rc=$?
  echo "   $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$summary"
  tail -n 3 "$res/$name.log" | sed 's/^/   | /' >> "$summary"
}

for part in "${parts[@]}"; do
  case $part in
    tests) run_part tests python3 -m pytest -q -p no:cacheprovider -m cuda tests ;;
    readahead) run_part readahead python3 benchmarks/readahead_bench.py --device cuda --repeat 1 \
                 --data "$data/readahead" --out "$res" ;;
    matrix) run_part matrix "${matrix[@]}" --out "$res" ;;
    reconfigure)  # does the driver's reconfigure hold with one and with ten decoder threads? (each bounded)
      for t in 1 10; do
        run_part "reconfigure_t$t" timeout 90 python3 benchmarks/reconfigure_check.py --seconds 30 --threads $t \
          --data "$data/matrix" --out "$res/reconfigure_t$t.json"
      done
      # the untried experiment: each reconfigure waits until the whole GPU is idle (see --quiesce)
      run_part reconfigure_t10_quiesce timeout 90 python3 benchmarks/reconfigure_check.py --seconds 30 --threads 10 \
        --quiesce --data "$data/matrix" --out "$res/reconfigure_t10_quiesce.json" ;;
    fixed-target)  # output surfaces at the decoder's room (ASYNCDECODE_NVDEC_FIXED_TARGET): which frames are wrong?
      for t in 1 10; do
        run_part "fixed_target_t$t" timeout 60 python3 benchmarks/reconfigure_check.py --seconds 8 --threads $t \
          --fixed-target --check 200 --check-share 0.5 --data "$data/matrix" --out "$res/fixed_target_t$t.json"
      done ;;
    tests-fixed)  # the GPU tests with the reconfigure and fixed output surfaces on (every decoder thread switching)
      # bounded: a driver hang (as the reconfigure without fixed surfaces gave) ends the part, not the call
      run_part tests_fixed timeout 300 env ASYNCDECODE_NVDEC_RECONFIGURE=1 ASYNCDECODE_NVDEC_FIXED_TARGET=1 \
        python3 -m pytest -q -p no:cacheprovider -m cuda tests ;;
    matrix-fixed)  # the matrix with them on, into $RESULTS/fixed (run `matrix` in the same call to compare)
      mkdir -p "$res/fixed"
      run_part matrix_fixed timeout $(( ${MATRIX_BUDGET:-285} + 120 )) \
        env ASYNCDECODE_NVDEC_RECONFIGURE=1 ASYNCDECODE_NVDEC_FIXED_TARGET=1 "${matrix[@]}" --out "$res/fixed" ;;
    soak) run_part soak "${soak[@]}" --out "$res/soak_cuda" ;;
    soak-start)
      sd=$soak_dir; mkdir -p "$sd"
      setsid nohup env PYTHONUNBUFFERED=1 "${soak[@]}" --out "$sd/soak_cuda" > "$sd/soak.log" 2>&1 < /dev/null &
      echo $! > "$sd/pid"
      echo "== soak-start: ${SOAK_MIN:-6} min in its own session (pid $!), under $sd" | tee -a "$summary" ;;
    soak-collect)
      sd=$soak_dir; t0=$SECONDS
      while [ $((SECONDS - t0)) -lt "${SOAK_WAIT_S:-540}" ] && [ ! -f "$sd/soak_cuda.json" ] && kill -0 "$(cat "$sd/pid" 2>/dev/null)" 2>/dev/null; do
        sleep 5
      done
      for f in soak.log soak_cuda.json soak_cuda.md soak_cuda.png soak_cuda.svg soak_cuda.partial.json; do
        [ -f "$sd/$f" ] && cp "$sd/$f" "$res/"
      done
      state="not running, not done"
      kill -0 "$(cat "$sd/pid" 2>/dev/null)" 2>/dev/null && state="still running"
      [ -f "$sd/soak_cuda.json" ] && state=done
      echo "== soak-collect: $state after $((SECONDS - t0)) s" | tee -a "$summary"
      tail -n 2 "$sd/soak.log" 2>/dev/null | sed 's/^/   | /' >> "$summary" ;;
    *) echo "unknown part: $part (tests readahead matrix soak reconfigure fixed-target tests-fixed matrix-fixed soak-start soak-collect)" | tee -a "$summary"
       exit 2 ;;
  esac
done
cat "$summary"
