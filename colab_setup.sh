#!/usr/bin/env bash
# Colab bootstrap: installs nbhelpers and what Colab lacks, keeping Colab's own torch/torchvision.
# Usage in a notebook cell:  !bash colab_setup.sh   (run from the repository root)
set -euo pipefail
cd "$(dirname "$0")"
# Drop torch/torchvision from the requirements so pip never replaces Colab's CUDA build.
grep -v -E '^(torch|torchvision)([<>=!~ ]|$)' requirements.txt > /tmp/memelab-requirements.txt
pip install -q -r /tmp/memelab-requirements.txt
pip install -q --no-deps -e .
python -c "import torch, nbhelpers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'nbhelpers', nbhelpers.__version__)"
