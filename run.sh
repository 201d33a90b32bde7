#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv (CPU torch 2.13.0 first, so pip never pulls
# a multi-GB CUDA build), installs advsmooth, then runs what you ask for.
#
#   bash run.sh demo        # set up, then `advsmooth demo` on the embedded digits data
#   bash run.sh test        # set up with the dev extra, then ruff + the test suite
#   bash run.sh test-slow   # the slow tests (kept out of the default run)
#   bash run.sh bench       # the benchmark suite (see benchmarks/README.md)
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=${ADVSMOOTH_VENV:-.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1

setup() {
    local extras=$1
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        "$VENV/bin/pip" install -q "torch==2.13.0"
    fi
    local stamp="$VENV/.advsmooth-$extras-$(cksum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/pip" install -q -e ".[$extras]"
        touch "$stamp"
    fi
}

want_chromium() {
    # The HTML-report test renders the report in headless Chromium; it skips cleanly without it.
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get install -y -q chromium >/dev/null 2>&1 || \
         (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
            echo "run.sh: chromium not installed; the HTML rendering test will be skipped" >&2
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        setup plot
        exec "$VENV/bin/advsmooth" demo "$@"
        ;;
    test)
        setup dev
        want_chromium
        "$VENV/bin/ruff" check src tests benchmarks
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    test-slow)
        setup dev
        exec "$VENV/bin/python" -m pytest -m slow "$@"
        ;;
    bench)
        setup dev
        exec "$VENV/bin/python" benchmarks/run.py "$@"
        ;;
    *)
        echo "usage: bash run.sh {demo|test|test-slow|bench} [args...]" >&2
        exit 2
        ;;
esac
