"""The node's persistent identity: an Ed25519 key kept in the data dir, so a restarted node has the same peer ID.

The key file holds the libp2p protobuf serialisation of the private key (the format go-libp2p and p2pd use), is
created with mode 0600 and written atomically, so a crash mid-write can never leave a half key that changes the ID.
"""

from __future__ import annotations

import os
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_private_key

KEY_FILE = "identity.key"


class IdentityError(RuntimeError):
    """The identity file exists but cannot be used (corrupt, unreadable)."""


def load_or_create_identity(data_dir: Path) -> KeyPair:
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        try:
            private = deserialize_private_key(path.read_bytes())
        except Exception as exc:
            raise IdentityError(f"{path}: not a libp2p private key ({exc}); move it away to get a new identity") from None
        return KeyPair(private, private.get_public_key())
    path.parent.mkdir(parents=True, exist_ok=True)
    pair = create_new_key_pair()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pair.private_key.serialize())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return pair
