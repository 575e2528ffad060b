#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment; safe to run again.
# torch/torchvision are pinned to the builds this project is tested with; pyproject.toml keeps ranges.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RAYDSCONV_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1 2> >(grep -v "is ignored: it is neither a file" >&2)
"${PIP[@]}" -e ".[test]" 2> >(grep -v "is ignored: it is neither a file" >&2)
