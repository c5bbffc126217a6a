#!/usr/bin/env bash
# The Colab set-up from a terminal (or a `!bash colab_setup.sh` cell): runs colab_setup.py on this clone.
# Each step is skipped when already done, so a re-run finishes an interrupted set-up. The notebooks' first
# cell runs colab_setup.py inside the notebook instead, which can also mount Drive and turn on Colab's widget
# manager. Options: MEMELAB_PULL=1, MEMELAB_DRIVE=/content/drive/MyDrive/memelab (see colab_setup.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/colab_setup.py" --home "$here" "$@"
