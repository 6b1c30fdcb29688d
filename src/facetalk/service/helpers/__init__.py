"""Helper processes that run the engine away from the event loop (upload checks, page analysis)."""
