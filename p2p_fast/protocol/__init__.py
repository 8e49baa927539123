"""Our own protocols on top of libp2p: message types and codec, peer announcements, tasks."""
