#!/bin/sh
# The locked CPU dependencies into a virtualenv: what `make deps` runs, and what docker/Dockerfile.cpu runs in
# its dependency layer. That layer copies this script and the two locks only, so Docker rebuilds it when they
# change and never for a Makefile or source edit (a cold layer is minutes of downloads; a cached one, none).
#   requirements/install_deps.sh PYTHON VENV      (from the repo root)
# --no-deps everywhere: the lock is the whole set, so pip resolves nothing and pulls in nothing else. torch
# comes first and alone, the only step that looks at PyTorch's index (an unreachable index costs seconds per
# package looked up).
set -eu
python=$1
venv=$2
torch_lock=requirements/lock/cpu-torch.txt
torch_version=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$torch_lock")
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
py=$venv/bin/python
"$py" -c "import torch, sys; sys.exit(torch.__version__ != '$torch_version')" 2>/dev/null \
    || "$py" -m pip install -q --require-hashes --no-deps -r "$torch_lock" \
        --extra-index-url https://download.pytorch.org/whl/cpu
"$py" -m pip install -q --require-hashes --no-deps -r requirements/lock/cpu.txt
# a venv set up before the lock may still hold them
"$py" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
touch "$venv/.rlhf-dist-deps"
