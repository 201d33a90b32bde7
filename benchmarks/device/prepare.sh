#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what a GPU device check needs beside the working tree:
#   .whl/     wheels of the packages advsmooth needs that the device image lacks (pydantic and
#             its binary core, for CPython 3.12 / x86-64), plus the peers for the side-by-side
#             DeepFool timing (foolbox, eagerpy, torchattacks: pure Python)
#   .device/  copies of the shared data and checkpoints the check reads (../shared does not
#             travel): MNIST / CIFAR-10 test splits and the shared models, about 45 MB
# Both folders are git-ignored; name them in the device run's `carry`. Then run
#   bash benchmarks/device/check.sh      (on the device machine; see benchmarks/README.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED="${ADVSMOOTH_SHARED:-../shared}"
PY="${PYTHON:-python3}"
rm -rf .whl .device
mkdir -p .whl .device/data .device/models
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl pydantic pydantic-core annotated-types typing-inspection \
    typing-extensions
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
    foolbox eagerpy torchattacks gitpython gitdb smmap
for f in mnist_test.npz cifar10_test.npz README.md; do cp "$SHARED/data/$f" .device/data/; done
cp "$SHARED"/models/*.pt "$SHARED/models/README.md" .device/models/
du -sh .whl .device
