#!/usr/bin/env bash
# The first run on a CUDA machine, in one call (issue 20, item 5):
#   1. the CUDA-marked tests (`pytest -m cuda`: fp16 with loss scaling, training on every device);
#   2. one epoch of ResNet-50 finetuning on a synthetic Waterbirds-format folder of 2,048 JPEGs at 224,
#      with 8 loader workers, bf16 then fp16, printing images/s and peak GPU memory.
# Usage: bash benchmarks/gpu_check.sh   (after `make setup`; PY=... to use another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU here (torch.cuda.is_available() is False, torch ' + torch.__version__ + ')')"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests
"$PY" -m pytest -q -p no:cacheprovider tests/test_device.py
for precision in bf16 fp16; do
  "$PY" benchmarks/gpu_finetune.py --device cuda --precision "$precision" --images 2048 --size 224 --batch-size 64 --workers 8
done
