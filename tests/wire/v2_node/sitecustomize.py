"""Put this directory on PYTHONPATH and set P2P_TEST_WIRE=v2: the Python process (a node) speaks the v2 wire schema
from its first message (tests/wire/wire_v2.py says what that means). Without the variable it does nothing."""

import os

if os.environ.get("P2P_TEST_WIRE") == "v2":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import wire_v2

    wire_v2.install()
