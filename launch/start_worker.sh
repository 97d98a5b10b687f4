#!/usr/bin/env bash
# Join this machine to an rlhf-dist Ray cluster as a worker node.
#
#   launch/start_worker.sh HEAD_IP[:PORT] [ray start args...]   e.g. launch/start_worker.sh 10.0.0.1 --num-gpus 8
#
# Uses the same token as the head: RAY_AUTH_TOKEN, or the file in RAY_AUTH_TOKEN_PATH
# (default ~/.ray/auth_token) copied from the head.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 HEAD_IP[:PORT] [ray start args...]" >&2
  exit 2
fi
head="$1"
shift
[[ "$head" == *:* ]] || head="$head:${RAY_PORT:-6379}"

here="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" && -x "$here/.venv/bin/ray" ]]; then
  export PATH="$here/.venv/bin:$PATH"
fi

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
token_path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [[ "$RAY_AUTH_MODE" == "token" && -z "${RAY_AUTH_TOKEN:-}" && ! -s "$token_path" ]]; then
  echo "start_worker: no auth token: copy the head's $token_path here, or set RAY_AUTH_TOKEN" >&2
  exit 2
fi
if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then export RAY_AUTH_TOKEN_PATH; fi

ray start --address "$head" --disable-usage-stats "$@"
