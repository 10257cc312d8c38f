#!/usr/bin/env bash
# Sets up (first time, with Chromium for the browser test and docker-compose to check docker-compose.yml),
# starts a throw-away Redis on port 6390 and runs the whole suite: unit, slow (real models), integration
# (real server, workers + Redis) and browser tests.
# Extra arguments go to pytest (e.g. -m "not browser", -k vad).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-browser --with-compose
bash scripts/redis.sh 6390
. .venv/bin/activate
export EMO_REDIS_URL=${EMO_REDIS_URL:-redis://127.0.0.1:6390/0}
ruff check . || { echo "lint failed (ruff check)"; exit 1; }
set +e
python -m pytest "$@"
rc=$?
set -e
exit $rc
