#!/usr/bin/env bash
# The anatomy-shift table on a lent GPU machine (Python 3.12 + torch there, nothing else): installs the carried
# wheels (.whl/, kept out of git; SimpleITK as an xz tarball of its unpacked wheel to fit the transfer limit), then
# runs every (seed, arm) training at once. The dataset is built here beforehand and carried:
#   carry: .whl  benchmarks/output/anatomy_shift_data
# Usage: bash benchmarks/gpu/anatomy_shift.sh SCHEDULE [extra bench_anatomy_shift.py arguments]
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
tar -xJf .whl/simpleitk.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, nnunetv2, SimpleITK; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
schedule=$1; shift
python3 benchmarks/bench_anatomy_shift.py --schedule "$schedule" --device cuda --parallel --out "${OUT:-benchmarks/output}" "$@"
