"""Sound to motion: acoustic features, then mouth, blinks and head pose per frame (offline and live)."""
