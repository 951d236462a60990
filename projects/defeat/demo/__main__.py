"""``python -m defeat.demo`` = ``python -m defeat demo``: see :mod:`defeat.demo.runner`."""

import sys

from .runner import main

if __name__ == "__main__":
    from ..engine.entry import run_entry_point

    sys.exit(0 if run_entry_point(main, script="python -m defeat.demo") else 1)
