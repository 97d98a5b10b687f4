#!/usr/bin/env bash
# Submit an rlhf-dist stage to a remote Ray cluster from this checkout (a laptop is fine).
#
#   launch/submit.sh configs/tiny.yaml --address http://HEAD:8265 [--ppo.steps 2 ...]
#
# Works from any directory: it runs from the checkout's root, so a relative config path is relative
# to the checkout (configs/tiny.yaml), wherever you call it from.
#
# Same as `rlhf-dist submit --working-dir <this checkout> ...`: validates the config here first,
# uploads the checkout without weights/checkpoints/outputs/.git/virtualenvs, streams the logs and
# exits with the job's status (0 SUCCEEDED, 1 FAILED, 5 STOPPED; 2 bad config or arguments,
# 4 cluster unreachable or auth refused, 7 the cluster's --python cannot import the requirements).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
if [[ -x "$here/.venv/bin/python" ]]; then python="$here/.venv/bin/python"; fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
cd "$here"
exec "$python" -m rlhf_dist.cli submit --working-dir "$here" "$@"
