"""``python -m p2p_fast`` is ``p2p-node``."""

import sys

from .cli import main

sys.exit(main())
