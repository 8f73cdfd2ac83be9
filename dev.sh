#!/usr/bin/env bash
# Set-up and entry points. On a fresh machine with Python >= 3.10:
#   bash dev.sh demo   # installs into .venv, then runs the main job on the bundled default model
#   bash dev.sh test   # installs into .venv (with test extras), then runs the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

ensure_venv() {
    if [ ! -f "$STAMP" ]; then
        echo "[dev.sh] creating $VENV and installing repq-hw (first run: torch is large, this takes minutes)"
        [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        # torch/torchvision first, as a pinned matching pair (timm imports torchvision)
        "$VENV/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
        "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
        rm -f "$VENV"/.installed-*
        touch "$STAMP"
    fi
}

ensure_iverilog() {
    if ! command -v iverilog >/dev/null 2>&1; then
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
            echo "[dev.sh] installing iverilog (Debian package) for the rtl test tier"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null
        else
            echo "[dev.sh] iverilog not found and cannot apt-get it: rtl tests will be skipped"
        fi
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    demo)
        ensure_venv
        exec "$VENV/bin/repq-hw" demo "$@" ;;
    test)
        ensure_venv
        ensure_iverilog
        exec "$VENV/bin/python" -m pytest "$@" ;;
    *)
        echo "usage: bash dev.sh demo|test [args...]" >&2
        exit 2 ;;
esac
