"""Per-principal limits: one caller cannot crowd out another. Calls in flight are limited
per server process, calls per second across processes (Redis), organizations created per
user per day (Redis); refusals are RESOURCE_EXHAUSTED with a retry hint. With Redis down
the limits fail open to per-process limits."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest

from fixtures_api import create_org, failure
from nobill.api.server import build_server
from nobill.v1 import tenancy_pb2
from support import new_user


@pytest.fixture
def limited_server(settings, database):
    """Build servers on `settings` with changes; each its own process-local state."""
    running = []

    def start(**changes):
        server = build_server(settings.replace(**changes), database)
        running.append(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        grpc.channel_ready_future(channel).result(timeout=10)
        return channel

    yield start
    for server in running:
        server.stop(grace=0)


def _wait_for_a_fresh_second() -> None:
    time.sleep(1.02 - (time.time() % 1))


def test_a_caller_with_calls_in_flight_does_not_starve_another(limited_server, database_url) -> None:
    channel = limited_server(grpc_threads=12, rate_limit_concurrent_calls=4, rate_limit_calls_per_second=0)
    noisy, quiet = new_user(channel), new_user(channel)
    org = create_org(noisy)
    quiet_org = create_org(quiet)
    with psycopg.connect(database_url) as blocker:
        # The noisy caller's reads of its org hang on this lock, holding their slots.
        blocker.execute("LOCK TABLE organizations IN ACCESS EXCLUSIVE MODE")
        pool = ThreadPoolExecutor(40)
        request = tenancy_pb2.GetOrganizationRequest(org_id=org.id)
        flood = [pool.submit(lambda: _code(lambda: noisy.tenancy.GetOrganization(request, timeout=20))) for _ in range(40)]
        time.sleep(0.5)
        refused_now = [f.result() for f in flood if f.done()]
        # The quiet caller's calls still run (GetMyPermissions does not touch organizations).
        quiet_codes = [
            _code(lambda: quiet.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=quiet_org.id), timeout=5))
            for _ in range(10)
        ]
        blocker.rollback()
        codes = [f.result() for f in flood]
        pool.shutdown()

    assert quiet_codes == [grpc.StatusCode.OK] * 10
    assert refused_now and set(refused_now) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) == 4  # the ones that held the 4 slots
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 36


def test_the_rate_limit_holds_across_server_processes(limited_server) -> None:
    # Two servers with separate in-process state, sharing Redis: as two `serve` processes.
    namespace = f"limits-{uuid.uuid4().hex[:8]}"
    first = limited_server(rate_limit_calls_per_second=10, redis_namespace=namespace)
    second = limited_server(rate_limit_calls_per_second=10, redis_namespace=namespace)
    user = new_user(first)
    org = create_org(user)
    request = tenancy_pb2.GetOrganizationRequest(org_id=org.id)
    on_second = type(user)(second, user.token)

    _wait_for_a_fresh_second()
    codes = [_code(lambda: user.tenancy.GetOrganization(request)) for _ in range(6)]
    codes += [_code(lambda: on_second.tenancy.GetOrganization(request)) for _ in range(6)]

    assert codes[:10] == [grpc.StatusCode.OK] * 10, codes
    assert codes[10:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, codes


def test_a_refusal_says_when_to_retry(limited_server) -> None:
    channel = limited_server(rate_limit_calls_per_second=3, redis_namespace=f"limits-{uuid.uuid4().hex[:8]}")
    user = new_user(channel)
    _wait_for_a_fresh_second()
    for _ in range(3):
        user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest())

    error = failure(lambda: user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in" in error.details() and "ms" in error.details()
    time.sleep(1.0)
    user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest())  # the next second admits it again


def test_a_user_may_create_only_so_many_organizations_a_day(limited_server) -> None:
    channel = limited_server(rate_limit_orgs_per_day=3, redis_namespace=f"limits-{uuid.uuid4().hex[:8]}")
    busy, other = new_user(channel), new_user(channel)
    for number in range(3):
        create_org(busy, f"Trial {number}")

    error = failure(lambda: create_org(busy, "One too many"))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "24 hours" in error.details() and "retry in" in error.details()
    assert len(busy.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations) == 3
    create_org(other)  # another user is not affected


def test_with_redis_down_limits_fail_open_to_each_process(limited_server) -> None:
    # Nothing listens on port 1: every Redis call fails.
    channel = limited_server(redis_url="redis://127.0.0.1:1/0", rate_limit_calls_per_second=5, rate_limit_orgs_per_day=1)
    user = new_user(channel)
    create_org(user)
    create_org(user)  # the org limit is not enforced without Redis

    _wait_for_a_fresh_second()
    codes = [_code(lambda: user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest())) for _ in range(7)]

    # The per-second limit still holds within this process.
    assert codes == [grpc.StatusCode.OK] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, codes


def _code(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def test_stripe_deliveries_are_not_capped_per_second(limited_server) -> None:
    """Stripe paces webhooks, not the sidecar: IngestStripeEvent skips the per-second cap
    (a refused event would only come back later) while other calls of the caller keep it."""
    from nobill.v1 import billing_pb2
    from support import new_service

    channel = limited_server(rate_limit_calls_per_second=3, redis_namespace=f"limits-{uuid.uuid4().hex[:8]}")
    sidecar = new_service(channel, scopes=("webhooks:ingest",), orgs=())
    _wait_for_a_fresh_second()
    codes = {
        _code(lambda: sidecar.billing.IngestStripeEvent(billing_pb2.IngestStripeEventRequest(payload=b"{}", signature_header="t=1,v1=00")))
        for _ in range(10)
    }
    # Each is refused for its (missing) signature, never for the rate.
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
    batch = billing_pb2.IngestStripeEventsRequest(deliveries=[billing_pb2.StripeWebhookDelivery(payload=b"{}", signature_header="t=1,v1=00")])
    # A batch: answered (its delivery rejected on its own), never refused for the rate.
    assert {_code(lambda: sidecar.billing.IngestStripeEvents(batch)) for _ in range(10)} == {grpc.StatusCode.OK}
    listing = {_code(lambda: sidecar.billing.ListPlans(billing_pb2.ListPlansRequest())) for _ in range(5)}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in listing
