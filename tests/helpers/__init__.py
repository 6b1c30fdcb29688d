"""Shared test helpers: service and queue processes, live-mode clients, browsers, synthetic
signals. Test modules import from here, never from each other."""
