"""``python -m trio_sse.cli``: the ``trio-sse`` command, as ``serve --workers N`` runs it."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
