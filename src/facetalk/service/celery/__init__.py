"""The Celery + Redis queue backend: the app, the API-side queue, the worker and the state in Redis."""
