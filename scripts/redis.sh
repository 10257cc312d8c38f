#!/usr/bin/env bash
# Ensures a Redis answers on the port given (default 6379); starts an in-memory one if none does.
set -euo pipefail
port=${1:-6379}
if redis-cli -p "$port" ping >/dev/null 2>&1; then exit 0; fi
redis-server --port "$port" --save '' --appendonly no --daemonize yes >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "redis did not start on port $port" >&2; exit 1
