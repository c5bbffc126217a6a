"""``python -m benchmarks.peers``: see :mod:`benchmarks.peers`."""

import sys

from benchmarks.peers.cli import main

if __name__ == "__main__":
    sys.exit(main())
