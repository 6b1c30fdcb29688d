"""The Celery application both sides share: the API publishes with it, workers consume.

The settings are the reliable-delivery ones (Celery's own names):

- ``task_acks_late``: a message is acknowledged after the render ends, not when it is
  received; a worker killed mid-render never acknowledges, so Redis keeps the message.
- ``task_reject_on_worker_lost``: a render process that dies (OOM killer, ``kill -9``)
  puts its message straight back in the queue instead of losing it.
- ``visibility_timeout`` (Redis transport): an unacknowledged message whose worker
  vanished is delivered again after this long. It must be longer than the longest
  job, or a job still rendering would be handed to a second worker: the API caps
  every job's time limit below it (``ServiceSettings.max_job_timeout``). A machine
  that dies is noticed much sooner through its job's lease (see ``redis_state``).
- ``worker_prefetch_multiplier = 1``: a worker holds only the messages it is
  rendering, so a waiting job is never stuck behind a long render on a busy machine.

Only JSON crosses the broker (no pickle), and results are not stored by Celery: the
job's outcome travels through the state in ``redis_state``.
"""

from __future__ import annotations

from celery import Celery

from .state import CELERY_QUEUE


def make_celery(broker_url: str, visibility_timeout: float) -> Celery:
    """A Celery app for ``broker_url`` (``redis://...``) with the render task registered."""
    app = Celery("facetalk", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_default_queue=CELERY_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": int(visibility_timeout)},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=3.0,
        # A Redis restart must not abort renders: they keep going and report when Redis is
        # back (their state updates retry), and redelivery is harmless (idempotent).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2,
                                   "interval_step": 0.5, "interval_max": 1.0},
        # Revoke broadcasts reach the workers through remote control.
        worker_enable_remote_control=True,
        # A render process imports the engine when it starts (several seconds on a small box).
        worker_proc_alive_timeout=120.0,
    )

    return app
