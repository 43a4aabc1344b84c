#!/usr/bin/env bash
# Day-ahead benchmark on the broad tune/test split (issue #15, part 4), in the
# forecast bench's protocol (shared/tools/forecast-bench/fcbench.py).
#
#   forecaster/bench/day_ahead/run.sh tune            # Aya, naive, seasonal naive on the tune split
#   forecaster/bench/day_ahead/run.sh test            # the same on the test split
#   forecaster/bench/day_ahead/run.sh test --peers    # + statsforecast's AutoTheta (about 20-40 min on 2 cores)
#   PEERS="AutoTheta MSTL AutoETS" run.sh test --peers  # more peers (MSTL: about 40 more minutes)
#
# Needs python3 with statsforecast, pandas and numpy (FCB_PYTHON, default
# /tmp/fcb/bin/python: `python3 -m venv /tmp/fcb && /tmp/fcb/bin/pip install
# statsforecast pandas numpy`). Writes under OUT (default /tmp/day_ahead).
set -euo pipefail
split=${1:?usage: run.sh tune|test [--peers]}
peers=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
py=${FCB_PYTHON:-/tmp/fcb/bin/python}
fcb=${FCBENCH:-$root/../shared/tools/forecast-bench/fcbench.py}
data=${AYA_DATASETS:-$root/../shared/datasets}
out=${OUT:-/tmp/day_ahead}/$split
case $split in tune|test) ;; *) echo "run.sh: split must be tune or test, got '$split'" >&2; exit 2 ;; esac
if ! "$py" -c 'import statsforecast, pandas, numpy' 2>/dev/null; then
    echo "run.sh: $py cannot import statsforecast, pandas and numpy; install them:" >&2
    echo "  python3 -m venv /tmp/fcb && /tmp/fcb/bin/pip install statsforecast pandas numpy" >&2
    echo "  (or point FCB_PYTHON at a python that has them)" >&2
    exit 2
fi
[ -f "$fcb" ] || { echo "run.sh: no forecast bench at $fcb (set FCBENCH)" >&2; exit 2; }
mkdir -p "$out"
"$py" "$fcb" prepare --data-dir "$data" --manifest "$here/$split.csv" --out "$out/prep"
"$py" "$fcb" run --prep "$out/prep" --out "$out/run" --models SeasonalNaive Naive --jobs 1
# the peer's run is kept apart (and reused) so that re-running Aya does not redo it
if [ "$peers" = --peers ]; then
    # shellcheck disable=SC2086
    "$py" "$fcb" run --prep "$out/prep" --out "$out/peers" --models ${PEERS:-AutoTheta} --jobs 2
fi
(cd "$root" && cargo build --release -q -p aya-forecaster --example fcbench)
"$root/target/release/examples/fcbench" --prep "$out/prep" --out "$out/aya.csv" \
    --timings "$out/aya_timings.csv" --threads 1
preds=(--pred "Aya=$out/aya.csv" --pred "SeasonalNaive=$out/run/pred_SeasonalNaive.csv"
       --pred "Naive=$out/run/pred_Naive.csv")
timings=(--timings "$out/aya_timings.csv")
for f in "$out"/peers/pred_*.csv; do
    [ -f "$f" ] || continue
    m=$(basename "$f" .csv); m=${m#pred_}
    preds+=(--pred "$m=$f")
done
[ -f "$out/peers/timings.csv" ] && timings+=(--timings "$out/peers/timings.csv")
"$py" "$fcb" score --prep "$out/prep" "${preds[@]}" "${timings[@]}" --out "$out/results.csv" --md "$out/table.md" > /dev/null
"$py" "$here/summary.py" "$out/results.csv"
