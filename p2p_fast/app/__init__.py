"""The application: the node that ties the protocols together, its CLI, console, ``p2p-ctl``, doctor and HTTP API.

May import every other layer; nothing below imports from here."""
