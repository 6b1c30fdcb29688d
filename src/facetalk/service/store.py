"""Old path of :mod:`facetalk.service.jobs.store`, kept only for tests/unit/test_service_store.py.

That test is outside the service restructure's files; drop this module once its import
says ``facetalk.service.jobs.store``.
"""

from .jobs.store import FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore, NewJob

__all__ = ["FAILED", "QUEUED", "RUNNING", "SUCCEEDED", "JobStore", "NewJob"]
