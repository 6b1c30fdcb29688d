"""The edge HTTP service: ``facetalk serve`` and ``facetalk worker``.

An HTTP API (FastAPI on Uvicorn) in front of a persistent job queue (SQLite in WAL
mode) and a small pool of render worker processes, all on one box, with no external
database or broker; or, with ``--queue redis://...``, Celery workers on other machines.
Packages, top to bottom (import-linter keeps this order, see pyproject.toml):

- ``api/``       the FastAPI app factory and one router per resource (jobs, live, web,
                 ops), API keys, streaming uploads, OpenAPI schemas, Prometheus metrics
- ``embedded/``  the default queue backend: the job table plus local render processes
- ``celery/``    the Celery + Redis backend: app, render task, ``facetalk worker``, state
- ``jobs/``      what both backends share: the job table (``store``), files on disk
                 (``storage``, ``files``), the render code and result document
                 (``render``), the queue interface and its backend registry (``queue``)
- ``helpers/``   ``HelperProcess``, the one class for every child process the service
                 starts here (render workers too), its typed messages, and the helpers
                 that decode uploads and analyse portraits for the page
- ``web/``       the pages' static files (ES modules, no build step)
- ``settings``, ``logs``, ``errors``  the one settings table (flags, environment, --help
                 and the README come from it), JSON logs and audit, typed errors

The click commands are in ``facetalk.cli.serve``. Nothing here is imported by
``import facetalk``; this package needs the ``server`` extra
(``pip install 'facetalk[server]'``).
"""
