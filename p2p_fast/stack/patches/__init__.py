"""Changes to py-libp2p's behaviour, one module per upstream bug or limit."""
