#!/usr/bin/env bash
# Start the Ray head of an rlhf-dist cluster on this machine, with token authentication.
#
#   launch/start_head.sh                 # GPUs and CPUs detected by Ray
#   RAY_PORT=6379 DASHBOARD_PORT=8265 launch/start_head.sh --num-gpus 8
#
# Extra arguments go to `ray start`. The token lives in $RAY_AUTH_TOKEN_PATH (default
# ~/.ray/auth_token, created here if missing): copy it to every worker node and to the laptop
# you submit from (or put it on a shared filesystem). Workers: launch/start_worker.sh HEAD_IP.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
# The job driver runs `python -m rlhf_dist.cli`: the environment that has rlhf-dist must be on PATH.
if [[ -z "${VIRTUAL_ENV:-}" && -x "$here/.venv/bin/ray" ]]; then
  export PATH="$here/.venv/bin:$PATH"
fi

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
token_path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [[ "$RAY_AUTH_MODE" == "token" && -z "${RAY_AUTH_TOKEN:-}" && ! -s "$token_path" ]]; then
  mkdir -p "$(dirname "$token_path")"
  (umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' > "$token_path")
  echo "start_head: new auth token in $token_path (copy it to workers and to where you submit from)"
fi
if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then export RAY_AUTH_TOKEN_PATH; fi

ray start --head \
  --port "${RAY_PORT:-6379}" \
  --dashboard-host "${DASHBOARD_HOST:-0.0.0.0}" \
  --dashboard-port "${DASHBOARD_PORT:-8265}" \
  --disable-usage-stats \
  "$@"

# The address the dashboard serves on: DASHBOARD_HOST when it names one, else the node's Ray address
# (--node-ip-address, which may be another interface than the machine's first), else the first address.
serve_ip="${DASHBOARD_HOST:-0.0.0.0}"
if [[ "$serve_ip" == "0.0.0.0" ]]; then
  serve_ip=""
  prev=""
  for arg in "$@"; do
    if [[ "$prev" == "--node-ip-address" ]]; then serve_ip="$arg"; fi
    if [[ "$arg" == --node-ip-address=* ]]; then serve_ip="${arg#--node-ip-address=}"; fi
    prev="$arg"
  done
  serve_ip="${serve_ip:-$(hostname -I 2> /dev/null | awk '{print $1}')}"
fi
echo "start_head: submit from anywhere that reaches port ${DASHBOARD_PORT:-8265}:"
echo "  rlhf-dist submit configs/tiny.yaml --address http://$serve_ip:${DASHBOARD_PORT:-8265}"
