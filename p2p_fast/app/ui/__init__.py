"""The dashboard served at ``/ui``: plain HTML, CSS and JavaScript, no build step (see ``p2p_fast.app.api.static``)."""
