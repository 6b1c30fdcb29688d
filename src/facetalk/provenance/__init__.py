"""Marking output as AI-generated: the invisible watermark, the visible label, and reading them back."""
