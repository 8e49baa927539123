"""The node's HTTP listener: health, readiness, Prometheus metrics and the JSON API, inside the node's trio loop."""
