#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment; safe to run again.
# torch/torchvision are pinned to the builds this project is tested with; pyproject.toml keeps ranges.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RAYDSCONV_VENV:-.venv}"
say() { echo "setup.sh: $*"; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
say "installing torch 2.14.1 and torchvision 0.29.1 (the largest part: a few minutes on a first run)"
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1 2> >(grep -v "is ignored: it is neither a file" >&2)
say "installing raydsconv (editable) with Ray Data, numpy, pillow, pyarrow, h5py, tqdm, and the test tools"
"${PIP[@]}" -e ".[test]" 2> >(grep -v "is ignored: it is neither a file" >&2)
say "done: $VENV/bin/raydsconv $("$VENV/bin/raydsconv" --version | cut -d' ' -f2)"
