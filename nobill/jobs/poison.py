"""The poison rule: a job that fails the same way NOBILL_JOB_POISON_AFTER times is parked,
not retried forever.

A job is an actor and its arguments (`nobill.usage.aggregate("org_...")`), whichever
message carries it: the sweeps send a new message for the same job every few seconds, and
each message retries on its own, so counting per message would never stop a job that
cannot succeed. Failures "the same way" have the same exception class and first line of
message. The count lives in Redis (every worker process shares it); a success resets it.

Parked: the job's record (actor, arguments, error, count, first and last seen) is kept in
Redis until a person replays it, the failing message goes to the dead-letter queue
instead of being retried, later messages for the same job are skipped, the counter
`nobill_jobs_parked_total` goes up (and the gauge `nobill_jobs_waiting_replay` counts the
records),
and one ERROR log line says what failed, how often, and the command that replays it.

Not counted: failures that say "try again later" (Stripe unavailable or rate limiting, a
lost database connection or a deadlock, Redis away) — an outage must not park every job
— and jobs whose actor never retries (the periodic sweeps: the schedule is their retry).

Hooks are Dramatiq's own: the Retries middleware, whose `after_process_message` decides
retry or fail, consults the rule first; `before_process_message` skips parked jobs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Retries, SkipMessage

from nobill import metrics

log = logging.getLogger("nobill.jobs.poison")

DEFAULT_POISON_AFTER = 5
# Failures further apart than this do not add up to a streak.
STREAK_SECONDS = 24 * 3600
# How long a worker trusts its list of parked jobs (a hit is confirmed in Redis).
_PARKED_CACHE_SECONDS = 2.0
REPLAY_COMMAND = "nobill jobs replay"

# KEYS: streak hash, parked hash, parked index set. ARGV: signature, now, threshold,
# streak ttl, actor, arguments (JSON), queue, message (JSON), job key.
# Returns the failure count when this call parked the job, -1 when it was parked already
# (a message that was running when another parked it), else 0.
_RECORD_FAILURE = """
if redis.call('exists', KEYS[2]) == 1 then
  redis.call('hincrby', KEYS[2], 'count', 1)
  redis.call('hset', KEYS[2], 'last_seen', ARGV[2])
  return -1
end
local count
if redis.call('hget', KEYS[1], 'signature') == ARGV[1] then
  count = redis.call('hincrby', KEYS[1], 'count', 1)
else
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[1], 'signature', ARGV[1], 'count', 1, 'first_seen', ARGV[2])
  count = 1
end
redis.call('hset', KEYS[1], 'last_seen', ARGV[2])
redis.call('expire', KEYS[1], tonumber(ARGV[4]))
if count < tonumber(ARGV[3]) then
  return 0
end
redis.call('hset', KEYS[2], 'actor', ARGV[5], 'arguments', ARGV[6], 'queue', ARGV[7], 'error', ARGV[1],
           'count', count, 'first_seen', redis.call('hget', KEYS[1], 'first_seen'), 'last_seen', ARGV[2],
           'message', ARGV[8])
redis.call('sadd', KEYS[3], ARGV[9])
redis.call('del', KEYS[1])
return count
"""


@dataclass(frozen=True)
class ParkedJob:
    key: str
    actor: str
    arguments: dict[str, Any]
    queue: str
    error: str
    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime


def job_key(actor_name: str, args: Any, kwargs: Any) -> str:
    """The job's identity: its actor and a digest of its arguments (readable, short)."""
    arguments = json.dumps([list(args), kwargs], sort_keys=True, default=str, separators=(",", ":"))
    return f"{actor_name}:{hashlib.sha256(arguments.encode()).hexdigest()[:16]}"


def signature(error: BaseException) -> str:
    """How a job failed: the exception's class and the first line of its message."""
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}: {first_line}"


def is_transient(error: BaseException) -> bool:
    """Failures that mean "try again later", never a reason to park a job."""
    import redis

    from nobill.db.errors import is_connection_error, is_transaction_conflict
    from nobill.errors import ResourceExhausted, Unavailable
    from nobill.stripe.errors import StripeTransient

    if isinstance(error, (dramatiq.errors.Retry, dramatiq.RateLimitExceeded, StripeTransient, Unavailable,
                          ResourceExhausted, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                          ConnectionError)):
        return True
    return is_connection_error(error) or is_transaction_conflict(error)


class PoisonRule:
    """Counts a job's failures in Redis and parks it after `threshold` of the same kind."""

    def __init__(self, redis_client: Any, *, namespace: str, threshold: int = DEFAULT_POISON_AFTER) -> None:
        self._redis = redis_client
        self._prefix = f"{namespace}:poison"
        self.threshold = threshold
        self._record = redis_client.register_script(_RECORD_FAILURE)
        self._lock = threading.Lock()
        self._parked: set[str] = set()
        self._parked_at = 0.0

    @property
    def index_key(self) -> str:
        return f"{self._prefix}:parked"

    def _streak_key(self, key: str) -> str:
        return f"{self._prefix}:streak:{key}"

    def _parked_key(self, key: str) -> str:
        return f"{self._prefix}:job:{key}"

    def is_parked(self, key: str) -> bool:
        """Whether the job is parked: a cached list, refreshed every 2 s, confirmed in Redis
        on a hit (so a replayed job runs at once)."""
        now = time.monotonic()
        with self._lock:
            if now - self._parked_at > _PARKED_CACHE_SECONDS:
                self._parked = {member.decode() for member in self._redis.smembers(self.index_key)}
                self._parked_at = now
            hit = key in self._parked
        return hit and bool(self._redis.sismember(self.index_key, key))

    def record_success(self, key: str) -> None:
        self._redis.delete(self._streak_key(key))

    def record_failure(self, message: dramatiq.Message, error: BaseException) -> int:
        """Count one failure; returns the number of failures when this one parked the job,
        -1 when the job was parked already, else 0."""
        key = job_key(message.actor_name, message.args, message.kwargs)
        arguments = json.dumps({"args": list(message.args), "kwargs": message.kwargs}, default=str)
        body = json.dumps({"queue_name": message.queue_name, "actor_name": message.actor_name,
                           "args": list(message.args), "kwargs": message.kwargs}, default=str)
        parked = int(self._record(
            keys=[self._streak_key(key), self._parked_key(key), self.index_key],
            args=[signature(error), time.time(), self.threshold, STREAK_SECONDS, message.actor_name, arguments,
                  message.queue_name, body, key],
        ))
        if parked > 0:
            with self._lock:
                self._parked.add(key)
        return parked

    def parked(self) -> list[ParkedJob]:
        """Every parked job, oldest first."""
        jobs = []
        for member in self._redis.smembers(self.index_key):
            key = member.decode()
            fields = {k.decode(): v.decode() for k, v in self._redis.hgetall(self._parked_key(key)).items()}
            if not fields:
                continue
            jobs.append(ParkedJob(
                key=key, actor=fields["actor"], arguments=json.loads(fields["arguments"]), queue=fields["queue"],
                error=fields["error"], count=int(fields["count"]),
                first_seen=dt.datetime.fromtimestamp(float(fields["first_seen"]), dt.timezone.utc),
                last_seen=dt.datetime.fromtimestamp(float(fields["last_seen"]), dt.timezone.utc),
            ))
        return sorted(jobs, key=lambda job: job.first_seen)

    def replay(self, broker: dramatiq.Broker, keys: list[str] | None = None) -> list[str]:
        """Unpark the jobs (all when `keys` is None) and send each once more, with a fresh
        count of failures; returns the keys replayed."""
        wanted = [job.key for job in self.parked()] if keys is None else keys
        replayed = []
        for key in wanted:
            raw = self._redis.hget(self._parked_key(key), "message")
            if raw is None:
                continue
            body = json.loads(raw)
            self._redis.srem(self.index_key, key)
            self._redis.delete(self._parked_key(key), self._streak_key(key))
            broker.enqueue(dramatiq.Message(queue_name=body["queue_name"], actor_name=body["actor_name"],
                                            args=tuple(body["args"]), kwargs=body["kwargs"], options={}))
            replayed.append(key)
        with self._lock:
            self._parked_at = 0.0
        return replayed


class PoisonAwareRetries(Retries):
    """Dramatiq's Retries, with the poison rule consulted before a failed message is
    retried, and parked jobs skipped. If Redis cannot be reached for the rule, messages
    are retried as plain Retries would."""

    def __init__(self, *, rule: PoisonRule, **options: Any) -> None:
        super().__init__(**options)
        self.rule = rule

    def _retries_at_all(self, broker: dramatiq.Broker, message: dramatiq.Message) -> bool:
        actor = broker.get_actor(message.actor_name)
        return message.options.get("max_retries", actor.options.get("max_retries", self.max_retries)) != 0

    def before_process_message(self, broker, message):  # noqa: ANN001, ANN201
        key = job_key(message.actor_name, message.args, message.kwargs)
        try:
            parked = self.rule.is_parked(key)
        except Exception:  # noqa: BLE001 - the rule must never stop a job from running
            log.warning("cannot read parked jobs", exc_info=True)
            return
        if parked:
            raise SkipMessage(f"job {key} is parked; `{REPLAY_COMMAND} {key}` runs it again")

    def after_process_message(self, broker, message, *, result=None, exception=None):  # noqa: ANN001, ANN201
        if exception is None:
            if self._retries_at_all(broker, message):
                try:
                    self.rule.record_success(job_key(message.actor_name, message.args, message.kwargs))
                except Exception:  # noqa: BLE001
                    log.warning("cannot reset a job's failure count", exc_info=True)
            return
        if self._retries_at_all(broker, message) and not is_transient(exception):
            try:
                failures = self.rule.record_failure(message, exception)
            except Exception:  # noqa: BLE001
                log.warning("cannot count a job's failure; retrying it as usual", exc_info=True)
                failures = 0
            if failures > 0:
                self._park(message, exception, failures)
                return
            if failures < 0:  # parked meanwhile by another message of the same job
                message.fail()
                return
        super().after_process_message(broker, message, result=result, exception=exception)

    def _park(self, message: MessageProxy, error: BaseException, failures: int) -> None:
        message.fail()  # to the dead-letter queue, not retried; the parked record replays it
        key = job_key(message.actor_name, message.args, message.kwargs)
        metrics.JOBS_PARKED.labels(message.queue_name, message.actor_name).inc()
        log.error(
            f"job parked after failing {failures} times the same way: {message.actor_name}"
            f"{tuple(message.args)} raised {signature(error)}. It will not run again until replayed: "
            f"fix the cause, then run `{REPLAY_COMMAND} {key}` (`nobill jobs parked` lists parked jobs)",
            extra={"job": key, "actor": message.actor_name, "job_args": list(message.args), "queue": message.queue_name,
                   "error": signature(error), "failures": failures, "replay": f"{REPLAY_COMMAND} {key}"},
        )


def rule_for(redis_url: str, *, namespace: str, threshold: int = DEFAULT_POISON_AFTER) -> PoisonRule:
    import redis

    return PoisonRule(redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5),
                      namespace=namespace, threshold=threshold)
