#!/bin/sh
# bench/gpu_proof.py on the lent GPU machine (the `device` tool), whose image has Python 3.12
# and PyTorch but not all of feverdream's packages, and reaches no network: they travel as
# wheels, at the versions constraints.txt pins (imageio-ffmpeg at its floor, 0.6: 0.8's is
# 68 MB). av (34 MB) and imageio-ffmpeg (30 MB) do not fit one call's 64 MiB beside the
# repository (16 MB), so they travel in two calls, the machine still warm between them:
#
#   here:   sh bench/gpu_proof_device.sh fetch          # the wheels into .whl/a and .whl/b
#   call 1: carry [".whl/a"], command "sh bench/gpu_proof_device.sh install .whl/a"
#   call 2: carry [".whl/b"], command
#           "sh bench/gpu_proof_device.sh install .whl/b && sh bench/gpu_proof_device.sh run"
#           (timeout_s 600; the report comes back from $OUT)
set -eu
wheels() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "$@"
}
case "${1:-}" in
fetch)
    rm -rf .whl/a .whl/b
    wheels -c constraints.txt -d .whl/a av open-clip-torch ftfy wcwidth simpleeval "librosa>=0.10.2" \
        soundfile audioread soxr pooch decorator platformdirs taming-transformers-rom1504
    wheels -d .whl/b "imageio-ffmpeg==0.6.0"
    du -sh .whl/a .whl/b
    ;;
install)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$2"/*.whl
    ;;
run)
    export PYTHONPATH="/tmp/site:$PWD"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 bench/gpu_proof.py --device cuda --out "${OUT:-bench/results/gpu_proof}"
    ;;
*)
    echo "usage: sh bench/gpu_proof_device.sh fetch | install DIR | run" >&2
    exit 2
    ;;
esac
