#!/usr/bin/env bash
# Build the coverage-guided fuzz targets of fuzz/ (AFL++ through cargo-afl,
# stable Rust) and run each one for SECONDS with afl-fuzz, one after the
# other on one core, starting from the seeds in fuzz/corpus/<target>.
# Prints executions, exec/s, crashes and hangs per target (from afl-fuzz's
# fuzzer_stats) and exits non-zero if any target found a crash.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 30 s, every target
#
# Findings stay in fuzz/out/<target>/default/{crashes,hangs}; reproduce one
# with `fuzz/target/release/<target> < fuzz/out/<target>/default/crashes/<id>`.
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECONDS_PER_TARGET=${1:-30}
shift || true
ALL_TARGETS=(csv scenario config proto store)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
case "$SECONDS_PER_TARGET" in
  ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$SECONDS_PER_TARGET'" >&2; exit 2 ;;
esac
for t in "${TARGETS[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: unknown target '$t' (targets: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

# Exit 3: the fuzzer itself cannot be had here (CI then skips this step).
if ! cargo afl --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-afl (crates.io)"
  cargo install --locked cargo-afl || { echo "fuzz.sh: cargo install cargo-afl failed" >&2; exit 3; }
fi
# Build AFL++ (afl-fuzz and its runtime) for this toolchain, once per machine.
if ! out=$(cargo afl config --build 2>&1); then
  case "$out" in
    *"already built"*) ;;
    *) echo "$out" | tail -20 >&2; echo "fuzz.sh: cargo afl config --build failed" >&2; exit 3 ;;
  esac
fi

export CARGO_TARGET_DIR="$ROOT/fuzz/target"
start=$(date +%s)
(cd fuzz && cargo afl build --release --bins)
echo "fuzz.sh: build took $(( $(date +%s) - start )) s (AFL_OPT_LEVEL=${AFL_OPT_LEVEL:-3})"
unset AFL_OPT_LEVEL # a build setting of cargo-afl, not one of afl-fuzz's

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_AFFINITY=1 AFL_SKIP_CRASHES=0 AFL_TMPDIR="${AFL_TMPDIR:-/tmp}"
mkdir -p fuzz/out
stat_of() { awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$1"; }
total_execs=0
total_crashes=0
report=()
for t in "${TARGETS[@]}"; do
  out="fuzz/out/$t"
  rm -rf "$out"
  echo "fuzz.sh: fuzzing $t for ${SECONDS_PER_TARGET} s"
  # -t 2000+: a 2 s timeout per input, seeds that exceed it are skipped.
  cargo afl fuzz -i "fuzz/corpus/$t" -o "$out" -V "$SECONDS_PER_TARGET" -t 2000+ \
    -- "fuzz/target/release/$t" >"fuzz/out/$t.log" 2>&1 || {
    tail -30 "fuzz/out/$t.log" >&2
    echo "fuzz.sh: afl-fuzz failed on $t (log: fuzz/out/$t.log)" >&2
    exit 1
  }
  stats="$out/default/fuzzer_stats"
  execs=$(stat_of "$stats" execs_done)
  speed=$(stat_of "$stats" execs_per_sec)
  crashes=$(find "$out/default/crashes" -type f -name 'id:*' | wc -l)
  hangs=$(find "$out/default/hangs" -type f -name 'id:*' | wc -l)
  secs=$(stat_of "$stats" run_time)
  edges=$(stat_of "$stats" edges_found)
  corpus=$(stat_of "$stats" corpus_count)
  total_execs=$((total_execs + execs))
  total_crashes=$((total_crashes + crashes))
  report+=("$(printf '%-9s %12s %10s %6s %8s %6s %6s %7s' "$t" "$execs" "$speed" "$secs" "$crashes" "$hangs" "$edges" "$corpus")")
done

printf '\n%-9s %12s %10s %6s %8s %6s %6s %7s\n' target execs exec/s secs crashes hangs edges corpus
printf '%s\n' "${report[@]}"
echo "fuzz.sh: ${#TARGETS[@]} target(s) x ${SECONDS_PER_TARGET} s: $total_execs executions, $total_crashes crash(es)"
if [ "$total_crashes" -gt 0 ]; then
  echo "fuzz.sh: crashes found: see fuzz/out/<target>/default/crashes/" >&2
  exit 1
fi
