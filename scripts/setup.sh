#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh Debian machine with Python 3.11:
# Debian packages (espeak-ng, chromium for the web-page test), a venv, the CPU torch wheel first
# (so nothing resolves a multi-GB CUDA build), then the package with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
[ -e /usr/lib/x86_64-linux-gnu/libespeak-ng.so.1 ] || ls /usr/lib/*/libespeak-ng.so.1 >/dev/null 2>&1 || need_apt+=(libespeak-ng1)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q "torch==2.13.0"
"$PIP" install -q -e '.[dev]'
# resemblyzer imports webrtcvad; the source build of webrtcvad it pulls does not import here,
# the wheel of the same module does.
"$PIP" install -q --force-reinstall --no-deps webrtcvad-wheels
"$VENV/bin/python" -c "import torch, ray, deepspeed, transformers; print('setup: ok: torch', torch.__version__, 'ray', ray.__version__)"
touch "$VENV/.installed"
