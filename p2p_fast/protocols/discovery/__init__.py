"""Finding peers: bootstrap addresses (IP or DNS, with or without peer IDs), mDNS, and the peers others announce."""
