"""``python -m defeat.demo``: see :mod:`defeat.demo.runner`."""

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
