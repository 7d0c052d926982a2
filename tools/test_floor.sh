#!/usr/bin/env bash
# The oldest releases pyproject.toml admits, installed and used, as a user with an older torch
# would: a fresh venv outside the checkout gets torch and torchvision at their floors first
# (PyPI's CUDA builds, as Colab has: several GB), then feverdream's wheel with every other
# direct dependency at its floor; torch must stay as it was. Then every module imports, the
# examples come out of the wheel, and the shapes demo renders a preview with its MP4.
#
#   tools/test_floor.sh [VENV]      (default: a new folder under /tmp; `make test-floor`)
set -euo pipefail
checkout=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$(mktemp -d /tmp/feverdream-floor.XXXXXX)/venv}
work=$(dirname "$venv")
mkdir -p "$work"
python=${PYTHON:-python3}

"$python" "$checkout/tools/floor_constraints.py" studio > "$work/floor.txt"
echo "== floors (pyproject.toml's >= bounds):"; tr '\n' ' ' < "$work/floor.txt"; echo

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q -c "$work/floor.txt" torch torchvision
before=$("$venv/bin/python" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)')
echo "== torch, torchvision before feverdream: $before"

"${pip[@]}" wheel -q --no-deps -w "$work/wheel" "$checkout"
wheel=$(ls "$work"/wheel/feverdream-*.whl)
"${pip[@]}" install -q -c "$work/floor.txt" "$wheel[studio]"
"${pip[@]}" install -q --no-deps taming-transformers-rom1504==0.0.6
after=$("$venv/bin/python" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)')
echo "== torch, torchvision after: $after"
if [ "$before" != "$after" ]; then echo "FAILED: installing feverdream replaced torch"; exit 1; fi
# Every requirement met, but taming's own (Lightning), which it is installed without on purpose.
if "${pip[@]}" check | grep -v '^taming-transformers-rom1504 '; then exit 1; fi
echo "== installed at their floors:"
"${pip[@]}" list --format=freeze | grep -iE "^($(sed 's/==.*//' "$work/floor.txt" | paste -sd'|'))=="

cd "$work"  # outside the checkout: only the installed wheel is importable
"$venv/bin/python" - <<'PY'
import importlib, pkgutil
import pipeline
names = [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")
         if m.name != "pipeline.__main__"]
for name in names:
    importlib.import_module(name)
print(f"== imported {len(names)} modules from {pipeline.__file__}")
PY
"$venv/bin/feverdream" examples "$work/examples"
started=$(date +%s)
"$venv/bin/feverdream" render "$work/examples/storyboards/demo-shapes.yaml" --preview \
  -o "$work/out"
"$venv/bin/feverdream" check "$work/out/preview/demo-shapes.mp4"
echo "== floor OK ($before): the preview rendered in $(( $(date +%s) - started )) s; $work"
