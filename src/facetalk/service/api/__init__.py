"""The HTTP API: the FastAPI app factory, one router per resource, keys, uploads and error shapes."""

from .app import create_app

__all__ = ["create_app"]
