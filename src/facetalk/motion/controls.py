"""The control vector: the interface between motion (which writes it) and render (which reads it)."""

from __future__ import annotations

#: Control names, in the order of the ``controls`` vector the renderer receives.
CONTROLS = ("jaw", "lip_up", "lip_down", "close", "round", "spread", "press",
            "brow", "blink_r", "blink_l")
#: Index of each control by name.
C = {name: i for i, name in enumerate(CONTROLS)}
