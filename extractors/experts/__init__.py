"""One module per expert; each registers itself with ``extractors.registry`` when imported."""
