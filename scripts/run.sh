#!/usr/bin/env bash
# Sets up (first time), starts Redis and serves the assistant at http://127.0.0.1:8765/ .
# Extra arguments go to `emo-agent serve` (e.g. --host 0.0.0.0 --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/redis.sh 6379
. .venv/bin/activate
exec emo-agent serve "$@"
