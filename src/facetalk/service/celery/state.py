"""The small amount of job state that API and workers share through Redis.

With Celery the API and the render workers may run on different machines. The API's
SQLite table stays the record clients read (listing, paging, audit, retention: one
writer, on local disk, because SQLite must not live on a network filesystem). What
the machines must agree on lives in Redis, next to the Celery messages, and changes
only through the Lua scripts below, which Redis runs atomically:

- ``facetalk:job:<id>`` (hash): status, attempts, generation, cancel flag, options,
  time limit, result/error. ``start`` decides whether a delivery renders (at most one
  live attempt, retry limit, cancel before start, stale or duplicate messages);
  ``finish`` records the first final state and ignores any later one, so a job that
  is delivered twice still ends exactly once.
- ``facetalk:lease:<id>``: who renders the job now, with a TTL the render refreshes.
  When it lapses (the machine died) the API puts the job back with a new generation
  and publishes it again; the stale message is dropped when it is eventually delivered.
- ``facetalk:events`` (stream): every change a worker makes (started, progress,
  requeued, final), appended in the same script that makes it. The API consumes it
  with a consumer group and mirrors it into SQLite, from where SSE reads progress.
- ``facetalk:worker:<name>`` (hash with TTL) and ``facetalk:workers`` (sorted set):
  heartbeats, current jobs and throughput counters for ``GET /v1/workers``.

Redis must run with persistence (AOF) so that none of this, nor the queue, is lost
when it restarts.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

PREFIX = "facetalk:"
EVENTS = PREFIX + "events"
WORKERS = PREFIX + "workers"
#: The Celery queue (a Redis list of that name) and the task name.
CELERY_QUEUE = "facetalk"
TASK_NAME = "facetalk.render"
#: Events kept in the stream (approximate trim); the API normally reads them in < 1 s.
EVENTS_MAXLEN = 100_000
#: A finished job's Redis hash is dropped this long after it ends (the API keeps the row).
FINAL_KEEP_S = 8 * 24 * 3600
FINAL_STATES = ("succeeded", "failed", "cancelled")


def job_key(job_id: str) -> str:
    """The job's shared state hash."""
    return f"{PREFIX}job:{job_id}"


def lease_key(job_id: str) -> str:
    """Who renders the job now (expires unless refreshed)."""
    return f"{PREFIX}lease:{job_id}"


def worker_key(name: str) -> str:
    """A worker's heartbeat hash."""
    return f"{PREFIX}worker:{name}"


def stopping_key(name: str) -> str:
    """Set while a worker shuts down: its renders hand their jobs back."""
    return f"{PREFIX}stopping:{name}"


def connect(url: str) -> redis.Redis:
    """A client with short timeouts: a dead Redis must fail fast, never hang a request."""
    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=3.0,
                                health_check_interval=15, decode_responses=True)


# Every script gets KEYS = [job hash, lease, events stream] and appends its event to the
# stream in the same atomic step as the change it describes.
_COMMON = """
local function final_state(s) return s == 'succeeded' or s == 'failed' or s == 'cancelled' end
local function event(job, kind, attempt, worker, data)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'job', job, 'kind', kind,
             'attempt', tostring(attempt), 'worker', worker, 'data', data)
end
"""

# ARGV: maxlen, job, gen, worker, pid, now, lease_ms, keep_s
START = _COMMON + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'gone', ''} end
if final_state(status) then return {'final', status} end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
if tonumber(ARGV[3]) < gen then return {'stale', tostring(gen)} end
local holder = redis.call('GET', KEYS[2])
if holder then return {'busy', holder} end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local limit = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '1')
local function finish(st, err)
  redis.call('HSET', KEYS[1], 'status', st, 'error', err, 'finished_at', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  event(ARGV[2], st, attempts, ARGV[4], cjson.encode({error = cjson.decode(err)}))
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  finish('cancelled', cjson.encode({error = 'cancelled', detail = 'cancelled before it started',
                                    hint = ''}))
  return {'cancelled', ''}
end
if attempts >= limit then
  finish('failed', cjson.encode({error = 'worker_crashed',
    detail = 'the render was interrupted ' .. attempts .. ' times (limit ' .. limit ..
             '); giving up',
    hint = 'The render process died on every attempt; please report it with the inputs.'}))
  return {'exhausted', tostring(attempts)}
end
attempts = attempts + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'attempts', attempts, 'worker', ARGV[4],
           'pid', ARGV[5], 'started_at', ARGV[6])
redis.call('SET', KEYS[2], ARGV[4] .. '|' .. ARGV[5] .. '|' .. attempts, 'PX', ARGV[7])
event(ARGV[2], 'started', attempts, ARGV[4], '{}')
return {'run', tostring(attempts)}
"""

# ARGV: maxlen, job, status, attempt, worker, now, data_json, keep_s, holder, event_json
# (the event's JSON is built by the caller: cjson would turn empty lists into objects)
FINISH = _COMMON + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or final_state(status) then return {'ignored', status or ''} end
local field = 'result'
if ARGV[3] ~= 'succeeded' then field = 'error' end
redis.call('HSET', KEYS[1], 'status', ARGV[3], field, ARGV[7], 'finished_at', ARGV[6],
           'worker', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[8])
if redis.call('GET', KEYS[2]) == ARGV[9] then redis.call('DEL', KEYS[2]) end
event(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[10])
return {'ok', ARGV[3]}
"""

# A worker that shuts down hands its running job back without using up the attempt.
# ARGV: maxlen, job, attempt, worker, holder, reason
HAND_BACK = _COMMON + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[5] then return {'no', status or ''} end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('DEL', KEYS[2])
event(ARGV[2], 'requeued', ARGV[3], ARGV[4], cjson.encode({reason = ARGV[6], refund = true}))
return {'ok', ''}
"""

# Keep the lease while rendering; take it back after a Redis restart lost it, unless the
# API has meanwhile given the job to someone else (then the render is superseded).
# ARGV: maxlen, job, holder, lease_ms, attempt
REFRESH = _COMMON + """
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[3] then redis.call('PEXPIRE', KEYS[2], ARGV[4]) return 'ok' end
if holder then return 'superseded' end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'running' and redis.call('HGET', KEYS[1], 'attempts') == ARGV[5] then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return 'ok'
end
return 'superseded'
"""

# API: a running job whose lease lapsed (its machine died). Back to the queue with a new
# generation; the caller publishes it again. ARGV: maxlen, job, reason
ORPHAN = _COMMON + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return {'no', ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'no', ''} end
local attempts = redis.call('HGET', KEYS[1], 'attempts')
redis.call('HSET', KEYS[1], 'status', 'queued')
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
event(ARGV[2], 'requeued', attempts, redis.call('HGET', KEYS[1], 'worker') or '',
      cjson.encode({reason = ARGV[3], refund = false}))
return {'requeued', tostring(gen)}
"""

# API: cancel. A queued job ends at once; a running one gets the flag its render polls.
# ARGV: maxlen, job, now, error_json, keep_s
CANCEL = _COMMON + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'gone' end
if final_state(status) then return status end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'error', ARGV[4], 'finished_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 'running'
"""

# API: publish again (new generation) a queued job whose message may not exist.
# ARGV: maxlen, job
BUMP = _COMMON + """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return -1 end
return redis.call('HINCRBY', KEYS[1], 'gen', 1)
"""


class Scripts:
    """The Lua scripts registered on one client (EVALSHA, re-loaded after a restart)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._start = client.register_script(START)
        self._finish = client.register_script(FINISH)
        self._hand_back = client.register_script(HAND_BACK)
        self._refresh = client.register_script(REFRESH)
        self._orphan = client.register_script(ORPHAN)
        self._cancel = client.register_script(CANCEL)
        self._bump = client.register_script(BUMP)

    @staticmethod
    def _keys(job_id: str) -> list[str]:
        return [job_key(job_id), lease_key(job_id), EVENTS]

    def start(self, job_id: str, gen: int, worker: str, pid: int, lease_s: float) -> tuple[str, str]:
        """('run', attempt) | ('final', status) | ('stale', gen) | ('busy', holder) |
        ('cancelled', '') | ('exhausted', attempts) | ('gone', '')."""
        out = self._start(keys=self._keys(job_id), args=[
            EVENTS_MAXLEN, job_id, gen, worker, pid, time.time(), int(lease_s * 1000),
            FINAL_KEEP_S])
        return str(out[0]), str(out[1])

    def finish(self, job_id: str, status: str, attempt: int, worker: str, holder: str,
               data: dict[str, Any]) -> bool:
        """Record a final state; False when the job had already ended (first one wins)."""
        doc = json.dumps(data, default=str)
        event = json.dumps({"result" if status == "succeeded" else "error": data}, default=str)
        out = self._finish(keys=self._keys(job_id), args=[
            EVENTS_MAXLEN, job_id, status, attempt, worker, time.time(), doc, FINAL_KEEP_S,
            holder, event])
        return str(out[0]) == "ok"

    def hand_back(self, job_id: str, attempt: int, worker: str, holder: str, reason: str) -> bool:
        """Return a running job to the queue, refunding the attempt (worker shutdown)."""
        out = self._hand_back(keys=self._keys(job_id), args=[
            EVENTS_MAXLEN, job_id, attempt, worker, holder, reason])
        return str(out[0]) == "ok"

    def refresh(self, job_id: str, holder: str, lease_s: float, attempt: int) -> bool:
        """Extend the lease; False when the job was given to another worker meanwhile."""
        out = self._refresh(keys=self._keys(job_id), args=[
            EVENTS_MAXLEN, job_id, holder, int(lease_s * 1000), attempt])
        return str(out) == "ok"

    def orphan(self, job_id: str, reason: str) -> int | None:
        """Requeue a running job whose lease lapsed; its new generation, or None."""
        out = self._orphan(keys=self._keys(job_id), args=[EVENTS_MAXLEN, job_id, reason])
        return int(out[1]) if str(out[0]) == "requeued" else None

    def cancel(self, job_id: str, error: dict[str, Any]) -> str:
        """'cancelled' (was queued), 'running' (flag set), a final status, or 'gone'."""
        return str(self._cancel(keys=self._keys(job_id), args=[
            EVENTS_MAXLEN, job_id, time.time(), json.dumps(error), FINAL_KEEP_S]))

    def bump(self, job_id: str) -> int | None:
        """A new generation for a queued job (to publish it again), or None if not queued."""
        out = int(self._bump(keys=self._keys(job_id), args=[EVENTS_MAXLEN, job_id]))
        return out if out >= 0 else None


def add_progress(client: redis.Redis, job_id: str, attempt: int, worker: str,
                 data: dict[str, Any]) -> None:
    """A progress event (best effort: a lost one is superseded by the next)."""
    client.xadd(EVENTS, {"job": job_id, "kind": "progress", "attempt": str(attempt),
                         "worker": worker, "data": json.dumps(data)},
                maxlen=EVENTS_MAXLEN, approximate=True)
