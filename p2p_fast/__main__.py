"""``python -m p2p_fast`` is ``p2p-node``."""

import sys

from p2p_fast.app.cli import main

sys.exit(main())
