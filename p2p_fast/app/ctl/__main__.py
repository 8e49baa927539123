"""``python -m p2p_fast.app.ctl``: the same as ``p2p-ctl``."""

import sys

from p2p_fast.app.ctl.cli import main

sys.exit(main())
