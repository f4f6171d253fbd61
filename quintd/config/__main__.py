"""``python -m quintd.config --write``: the README's tables of configuration keys made anew
from the parts' declarations (``--check``, the default: exit 1 if they are stale)."""

import sys

from quintd.config.render import main

raise SystemExit(main(sys.argv[1:]))
