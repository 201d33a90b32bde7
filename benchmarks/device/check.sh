#!/usr/bin/env bash
# The GPU device check, as one command (run on the device machine from the repository root,
# with `.whl` and `.device` carried; prepare them here with benchmarks/device/prepare.sh):
#   1. installs the carried wheels into /tmp/site (nothing is fetched there);
#   2. the CUDA-parametrised tests (skipped on CPU-only machines): every attack leaves a CUDA
#      model, input and the RNG state untouched (tests/test_invariance.py), plus the DeepFool
#      and evaluate tests, as a smoke test of that machine's torch;
#   3. a side-by-side timing on the GPU (benchmarks/device/deepfool_cuda.py): DeepFool L2
#      clip=True, advsmooth against Foolbox, batches of 128, on the shared MNIST LeNet and
#      CIFAR-10 ResNet-20, with the same images for both.
# Everything it prints also goes to $OUT/check.log; the timing table to $OUT/deepfool_cuda.json.
set -uo pipefail
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 ADVSMOOTH_NO_PROGRESS=1
export ADVSMOOTH_SHARED="$PWD/.device" ADVSMOOTH_DATA="$PWD/.device/data" \
       ADVSMOOTH_MODELS="$PWD/.device/models"
{
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD/src"
  else
    export PYTHONPATH="$PWD/src"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  python3 -m pytest -q -p no:cacheprovider tests/test_invariance.py tests/test_deepfool.py \
      tests/test_evaluate.py 2>&1 | tail -n 15
  # shellcheck disable=SC2086 - DEVICE_CHECK_ARGS holds several words (e.g. "--limit 32")
  python3 benchmarks/device/deepfool_cuda.py --out "$OUT/deepfool_cuda.json" ${DEVICE_CHECK_ARGS:-}
} 2>&1 | tee "$OUT/check.log"
