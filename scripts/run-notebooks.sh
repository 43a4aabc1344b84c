#!/usr/bin/env bash
# Executes every notebook in notebooks/ headless, so they never rot.
#
# - creates (or reuses) a private virtualenv with the pinned notebooks/requirements.txt
#   (default <repo>/.venv-notebooks; override with NOTEBOOKS_VENV, interpreter with PYTHON);
# - builds the `aya` binary (debug, like the tests; AYA_BIN overrides it and skips the build);
# - runs `jupyter nbconvert --execute` on each notebooks/*.ipynb, failing on the first cell
#   error, and writes the executed copies (with their plots) to out/notebooks/.
#
# A notebook declares the `aya` subcommands it calls in its metadata (`aya.requires`). If one
# of them still answers "not available yet" (exit code 4: its issue has not landed), the
# notebook is reported as SKIPPED with that reason instead of failing; any other error fails.
#
# Usage: bash scripts/run-notebooks.sh [notebooks/NAME.ipynb ...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${NOTEBOOKS_VENV:-$ROOT/.venv-notebooks}"
PYTHON="${PYTHON:-python3}"
OUT="$ROOT/out/notebooks"
REQ="$ROOT/notebooks/requirements.txt"
export AYA_DATASETS="${AYA_DATASETS:-$(cd "$ROOT/.." && pwd)/shared/datasets}"
export AYA_NB_OUT="$OUT"

# 1. Virtualenv with the pinned requirements (reinstalled only when the file changes).
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.aya-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing $REQ into $VENV"
    "$VENV/bin/pip" install --disable-pip-version-check --quiet -r "$REQ"
    echo "$want" > "$stamp"
fi
mkdir -p "$VENV/etc/jupyter" "$VENV/etc/ipython"
"$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name aya-notebooks \
    --display-name "Python (aya notebooks)" > /dev/null

# 2. The binary the notebooks call.
if [ -z "${AYA_BIN:-}" ]; then
    cargo build --quiet -p aya-cli --bin aya
    export AYA_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/aya"
fi
[ -x "$AYA_BIN" ] || { echo "error: AYA_BIN=$AYA_BIN is not an executable" >&2; exit 1; }
echo "using $AYA_BIN"

# 3. Execute each notebook.
mkdir -p "$OUT"
if [ "$#" -gt 0 ]; then notebooks=("$@"); else notebooks=("$ROOT"/notebooks/*.ipynb); fi
export JUPYTER_DATA_DIR="$VENV/share/jupyter" JUPYTER_PATH="$VENV/share/jupyter"
export JUPYTER_CONFIG_DIR="$VENV/etc/jupyter" IPYTHONDIR="$VENV/etc/ipython"
export PYDEVD_DISABLE_FILE_VALIDATION=1

executed=0 skipped=0
for nb in "${notebooks[@]}"; do
    name="$(basename "$nb" .ipynb)"
    # The notebook's `aya.requires` metadata lists probe commands: one `aya` invocation per
    # subcommand it calls, with valid flags and an input path that does not exist. An
    # implemented subcommand fails on that input (exit 3); one whose issue has not landed
    # answers exit 4 whatever the input.
    missing=""
    while IFS= read -r probe_args; do
        [ -n "$probe_args" ] || continue
        set +e
        # shellcheck disable=SC2086 # the probe arguments are a word list by design
        probe="$("$AYA_BIN" $probe_args 2>&1)"
        code=$?
        set -e
        if [ "$code" -eq 4 ]; then missing="$missing ${probe#aya: error: };"; fi
    done < <("$VENV/bin/python" -c 'import json,sys
for probe in json.load(open(sys.argv[1]))["metadata"].get("aya", {}).get("requires", []):
    print(" ".join(probe))' "$nb")
    if [ -n "$missing" ]; then
        echo "SKIPPED $name:$missing"
        skipped=$((skipped + 1))
        continue
    fi
    echo "executing $name"
    started=$(date +%s)
    "$VENV/bin/jupyter" nbconvert --to notebook --execute \
        --ExecutePreprocessor.kernel_name=aya-notebooks \
        --ExecutePreprocessor.timeout=900 \
        --output-dir "$OUT" --output "$name" "$nb"
    echo "executed $name in $(( $(date +%s) - started )) s -> out/notebooks/$name.ipynb"
    executed=$((executed + 1))
done
echo "notebooks: $executed executed, $skipped skipped"
