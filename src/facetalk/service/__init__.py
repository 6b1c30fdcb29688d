"""The edge HTTP service: ``facetalk serve``.

An HTTP API (FastAPI on Uvicorn) in front of a persistent job queue (SQLite in WAL
mode) and a small pool of render worker processes, all on one box, with no external
database or broker. Modules:

- ``settings``  runtime settings (host, port, storage, workers, limits...) from CLI/env
- ``store``     the SQLite job table and its state transitions (each one audited)
- ``storage``   where a job's inputs and output live on disk
- ``queue``     the queue interface the API talks to (a Celery backend can implement it)
- ``embedded``  the default backend: the store plus supervised worker processes
- ``store_queue`` what both backends share (the job table's reads, ETAs, retention)
- ``celery_backend`` the Celery + Redis backend (``--queue redis://...``), API side;
  ``celery_app`` the Celery app, ``celery_worker`` ``facetalk worker``, ``redis_state``
  the job state the machines share, ``shared_storage`` what a remote worker needs
- ``workers_api`` ``GET /v1/workers`` and per-worker metrics
- ``worker``    the code that runs inside a render process (no web stack imported)
- ``uploads``   streaming multipart parsing with size limits; options from the form
- ``validator`` decoding uploads with the engine's loaders, in helper processes
- ``app``       the FastAPI app factory, routes and error mapping (``errors``)
- ``auth``      optional API keys; ``metrics`` Prometheus; ``logs`` JSON logs and audit
- ``schemas``   OpenAPI shapes generated from GenerationOptions
- ``cli``       the ``serve`` and ``worker`` click commands

Nothing here is imported by ``import facetalk``; this package needs the ``server``
extra (``pip install 'facetalk[server]'``).
"""
