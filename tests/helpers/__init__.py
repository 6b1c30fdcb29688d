"""Shared test helpers (never imported from ``test_*`` modules' own definitions)."""
