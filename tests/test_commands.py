"""Every command in the README's command table, run as a user runs it: a subprocess with
the settings the README says (`. .nobill/dev.env`), against a running `nobill dev`, and
checked by its effect on that platform, not only by its exit status.

One `nobill dev` serves the whole module (on a fresh database and Redis namespace of the
test servers); the tests run in file order and build on each other's orgs."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from nobill.v1 import audit_pb2, billing_pb2, common_pb2, tenancy_pb2
from support import Client, with_database

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e

# The commands each test below runs; the README's table must list exactly these.
COVERED: set[str] = set()


def covers(*commands: str) -> Callable:
    COVERED.update(commands)
    return lambda test: test


def readme_commands() -> set[str]:
    """`nobill X [Y]` of each row of the README's command table (sub-commands of stripe and audit)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n\n", 2)[1]
    found = set()
    for cell in re.findall(r"^\| (.+?) \|", table, flags=re.MULTILINE):
        for command in re.findall(r"`nobill ([a-z-]+(?: [a-z-]+)?)", cell):
            words = command.split()
            found.add(" ".join(words if words[0] in ("stripe", "audit", "jobs") else words[:1]))
    return found - {"command"}


def test_every_command_in_the_readme_table_has_a_test_here() -> None:
    assert readme_commands() == COVERED


# --- the platform -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "STRIPE_"))}


def read_dev_env(path: Path) -> dict[str, str]:
    """What `. .nobill/dev.env` sets in a shell."""
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            (assignment,) = shlex.split(line[len("export "):])
            name, _, value = assignment.partition("=")
            values[name] = value
    return values


@dataclass
class Platform:
    data_dir: Path
    info: dict
    env: dict[str, str]  # the README's settings for acting on it: dev.env
    process: subprocess.Popen
    database_url: str  # a superuser URL of its database, for checks

    def client(self, channel: grpc.Channel, token: str | None = None) -> Client:
        return Client(channel, token or self.info["token"])

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.info["grpc_addr"])


def run_nobill(*args: str, env: dict[str, str], timeout: float = 60, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nobill.cli", *args], env={**clean_environment(), **env},
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


def start_nobill(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nobill.cli", *args], env={**clean_environment(), **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def stop_nobill(process: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    process.send_signal(sig)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"did not stop on {signal.Signals(sig).name}: {stderr[-3000:]}") from None
    assert process.returncode == 0, stderr[-3000:]
    return stdout, stderr


def start_dev(data_dir: Path, env: dict[str, str], ready: Path) -> tuple[dict, subprocess.Popen]:
    ready.unlink(missing_ok=True)
    process = start_nobill(
        "dev", "--data-dir", str(data_dir), "--addr", "127.0.0.1:0", "--ready-file", str(ready),
        env={"NOBILL_WEBHOOKS_ADDR": "127.0.0.1:0", **env},
    )
    try:
        _wait_for(lambda: ready.exists() or process.poll() is not None, timeout=120, what="nobill dev")
    except AssertionError:
        process.kill()
        raise
    if process.poll() is not None:
        raise AssertionError(f"nobill dev exited: {process.communicate()[1]}")
    return json.loads(Path(ready.read_text()).read_text()), process


@pytest.fixture(scope="module")
def fresh_database(postgres_admin_url: str) -> Iterator[str]:
    name = f"nobill_commands_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield with_database(postgres_admin_url, name)
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, fresh_database: str, redis_url: str) -> Iterator[Platform]:
    """`nobill dev` on the test servers (a database nothing has migrated yet, its own Redis namespace)."""
    home = tmp_path_factory.mktemp("commands")
    dev_env = {
        "NOBILL_DATABASE_URL": fresh_database,
        "NOBILL_REDIS_URL": redis_url,
        "NOBILL_REDIS_NAMESPACE": f"nobill-commands-{uuid.uuid4().hex[:8]}",
        # Seat changes wait for reconcile-seats (or this long) before reaching Stripe.
        "NOBILL_SEAT_SYNC_DELAY_SECONDS": "3600",
        # A job failing the same way twice is parked (test_jobs_parked_and_replay).
        "NOBILL_JOB_POISON_AFTER": "2",
        # Every test here creates its orgs as dev's one user.
        "NOBILL_RATE_LIMIT_ORGS_PER_DAY": "0",
    }
    data_dir = home / ".nobill"
    info, process = start_dev(data_dir, dev_env, home / "ready")
    platform = Platform(data_dir, info, read_dev_env(data_dir / "dev.env"), process, fresh_database)
    yield platform
    if process.poll() is None:
        stop_nobill(process)


# --- dev ----------------------------------------------------------------------------------------


@covers("dev")
def test_dev_serves_and_writes_what_other_commands_need(platform: Platform) -> None:
    env = platform.env
    assert env["NOBILL_DATABASE_URL"].rsplit("/", 1)[1] == platform.database_url.rsplit("/", 1)[1]
    assert env["NOBILL_STRIPE_API_BASE"] == platform.info["stripe_api_base"] and env["STRIPE_API_KEY"]
    assert env["NOBILL_AUDIT_KEY"] and env["NOBILL_JWT_SECRET"] and env["NOBILL_STRIPE_WEBHOOK_SECRETS"]
    assert env["NOBILL_CORE_ADDR"] == platform.info["grpc_addr"]
    assert oct((platform.data_dir / "dev.env").stat().st_mode & 0o777) == "0o600"
    with platform.channel() as channel:
        org = platform.client(channel).tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Dev Co"))
    assert org.organization.id.startswith("org_")


# --- token --------------------------------------------------------------------------------------


@covers("token")
def test_token_mints_a_token_the_running_server_accepts(platform: Platform) -> None:
    result = run_nobill("token", "--sub", "cli-user", "--email", "cli@example.com", env=platform.env)
    assert result.returncode == 0, result.stderr
    with platform.channel() as channel:
        client = platform.client(channel, result.stdout.strip())
        org = client.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Token Co")).organization
        listed = client.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations
    assert [o.id for o in listed] == [org.id]

    # Without settings, in the checkout that ran `nobill dev`: the secret in its data dir.
    plain = run_nobill("token", env={"NOBILL_DATA_DIR": str(platform.data_dir)})
    assert plain.returncode == 0, plain.stderr
    with platform.channel() as channel:
        assert platform.client(channel, plain.stdout.strip()).tenancy.ListOrganizations(
            tenancy_pb2.ListOrganizationsRequest()
        ).organizations


# --- stripe -------------------------------------------------------------------------------------


def _stripe(platform: Platform):  # noqa: ANN202
    import stripe

    return stripe.StripeClient(
        platform.env["STRIPE_API_KEY"], base_addresses={"api": platform.env["NOBILL_STRIPE_API_BASE"]}
    )


@covers("stripe sync")
def test_stripe_sync_finds_the_catalog_dev_synced(platform: Platform) -> None:
    result = run_nobill("stripe", "sync", env=platform.env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"done: 0 created, 0 updated, [1-9]\d* unchanged", result.stdout), result.stdout
    from nobill.billing import plans

    product_ids = {product.id for product in _stripe(platform).v1.products.list({"limit": 100}).data}
    assert plans.details(plans.PlanCode.PRO).product_id in product_ids


def _org(platform: Platform, name: str) -> str:
    with platform.channel() as channel:
        return platform.client(channel).tenancy.CreateOrganization(
            tenancy_pb2.CreateOrganizationRequest(name=name)
        ).organization.id


def _audit_actions(platform: Platform, org_id: str) -> list[str]:
    with platform.channel() as channel:
        events = platform.client(channel).audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(org_id=org_id)).events
    return [event.action for event in events]


def _chain_is_valid(platform: Platform, org_id: str) -> bool:
    with platform.channel() as channel:
        return platform.client(channel).audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=org_id)).valid


@covers("stripe enterprise-price")
def test_stripe_enterprise_price_creates_the_price_and_audits_it(platform: Platform) -> None:
    from nobill.billing.enterprise import lookup_key

    org_id = _org(platform, "Enterprise Co")
    result = run_nobill("stripe", "enterprise-price", "--org", org_id, "--amount", "250000", env=platform.env)
    assert result.returncode == 0, result.stderr
    assert "Stripe price: done" in result.stdout, result.stdout
    prices = _stripe(platform).v1.prices.list({"lookup_keys": [lookup_key(org_id)]}).data
    assert [(price.unit_amount, price.metadata["org_id"]) for price in prices] == [(250000, org_id)]
    assert "billing.enterprise_price_requested" in _audit_actions(platform, org_id)
    assert _chain_is_valid(platform, org_id)

    # Without the audit key the change is refused before anything is written, naming the setting.
    refused = run_nobill(
        "stripe", "enterprise-price", "--org", org_id, "--amount", "1",
        env={k: v for k, v in platform.env.items() if k != "NOBILL_AUDIT_KEY"},
    )
    assert refused.returncode == 2 and "NOBILL_AUDIT_KEY" in refused.stderr
    bad_org = run_nobill("stripe", "enterprise-price", "--org", "nope", "--amount", "1", env=platform.env)
    assert bad_org.returncode == 2 and "--org" in bad_org.stderr


@covers("stripe retry-failed")
def test_stripe_retry_failed_queues_failed_changes_again(platform: Platform) -> None:
    org_id = _org(platform, "Retry Co")
    assert run_nobill("stripe", "enterprise-price", "--org", org_id, "--amount", "300000", env=platform.env).returncode == 0
    with psycopg.connect(platform.database_url, autocommit=True) as superuser:
        (outbox_id,) = superuser.execute(
            "UPDATE stripe_outbox SET state = 'failed', last_error = 'test: failed for good'"
            " WHERE org_id = %s AND kind = 'set_enterprise_price' RETURNING outbox_id",
            (org_id,),
        ).fetchone()
    result = run_nobill("stripe", "retry-failed", "--org", org_id, env=platform.env)
    assert result.returncode == 0, result.stderr
    assert "1 failed Stripe change(s) queued again" in result.stdout and outbox_id in result.stdout
    assert "billing.stripe_calls_retried" in _audit_actions(platform, org_id)

    def done_again() -> bool:  # dev's worker ran it again
        with psycopg.connect(platform.database_url) as superuser:
            return superuser.execute(
                "SELECT state FROM stripe_outbox WHERE outbox_id = %s", (outbox_id,)
            ).fetchone() == ("done",)

    _wait_for(done_again, what="the worker to run the retried change")
    assert _chain_is_valid(platform, org_id)


def _subscribe_to_pro(platform: Platform, org_id: str) -> None:
    """Checkout on the sandbox (completed through its control API), as the README's tour does."""
    with platform.channel() as channel:
        billing = platform.client(channel).billing
        session = billing.CreateCheckoutSession(
            billing_pb2.CreateCheckoutSessionRequest(
                org_id=org_id, plan=common_pb2.PLAN_PRO, success_url="http://localhost/ok",
                cancel_url="http://localhost/cancel",
            )
        )
        request = urllib.request.Request(
            f"{platform.env['NOBILL_STRIPE_API_BASE']}/_sandbox/checkout/sessions/{session.checkout_session_id}/complete",
            data=b'{"outcome": "succeeded"}', method="POST", headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).read()

        def subscribed() -> bool:  # the org keeps the rest of its trial, now with a card on Stripe
            got = billing.GetSubscription(billing_pb2.GetSubscriptionRequest(org_id=org_id)).subscription
            return got.stripe_status == "trialing" and got.has_payment_method

        _wait_for(subscribed, what="the checkout's webhooks")


@covers("stripe reconcile-seats")
def test_stripe_reconcile_seats_finds_and_queues_a_drift(platform: Platform) -> None:
    org_id = _org(platform, "Seats Co")
    _subscribe_to_pro(platform, org_id)
    with platform.channel() as channel:
        platform.client(channel).tenancy.AddMember(
            tenancy_pb2.AddMemberRequest(org_id=org_id, email="seat@example.com", role=common_pb2.ROLE_MEMBER)
        )
    # The seat change waits (NOBILL_SEAT_SYNC_DELAY_SECONDS): Stripe still has one seat.
    result = run_nobill("stripe", "reconcile-seats", env=platform.env)
    assert f"{org_id}: Stripe has 1 seat(s), 2 member(s); sync queued" in result.stdout, result.stdout
    assert "subscription.seat_drift_found" in _audit_actions(platform, org_id)
    assert _chain_is_valid(platform, org_id)


@covers("stripe replay")
def test_stripe_replay_lists_and_replays_parked_events(platform: Platform) -> None:
    with psycopg.connect(platform.database_url, autocommit=True) as superuser:
        row = superuser.execute(
            "UPDATE stripe_events SET state = 'parked', last_error = 'test: parked'"
            " WHERE event_id = (SELECT event_id FROM stripe_events WHERE state = 'applied' ORDER BY received_at LIMIT 1)"
            " RETURNING event_id, event_type"
        ).fetchone()
    assert row, "the checkout above stored webhook events"
    event_id, event_type = row
    listed = run_nobill("stripe", "replay", "--list", env=platform.env)
    assert listed.returncode == 0, listed.stderr
    assert event_id in listed.stdout and event_type in listed.stdout and "test: parked" in listed.stdout
    replayed = run_nobill("stripe", "replay", event_id, env=platform.env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed 1 parked event(s)\n  {event_id}" in replayed.stdout
    assert event_id not in run_nobill("stripe", "replay", "--list", env=platform.env).stdout


@covers("jobs parked", "jobs replay")
def test_jobs_parked_lists_a_poisoned_job_and_replay_runs_it_after_the_fix(platform: Platform) -> None:
    from nobill.v1 import usage_pb2

    org_id = _org(platform, "Poisoned Co")
    trigger = f"nobill_commands_refuse_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(platform.database_url, autocommit=True) as superuser:
        # Every aggregation of this org fails the same way, as an overflowing org's did.
        superuser.execute(
            f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.org_id = '{org_id}' THEN RAISE EXCEPTION 'totals refused (test)'; END IF; RETURN NEW; END $$"
        )
        superuser.execute(f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON usage_totals FOR EACH ROW EXECUTE FUNCTION {trigger}()")
        try:
            with grpc.insecure_channel(platform.info["usage_grpc_addr"]) as channel:
                platform.client(channel).usage.RecordUsage(usage_pb2.RecordUsageRequest(
                    org_id=org_id,
                    events=[usage_pb2.UsageEvent(idempotency_key=f"k{i}", metric="api_requests", quantity=3) for i in range(4)],
                ))
            listed = lambda: run_nobill("jobs", "parked", env=platform.env).stdout  # noqa: E731
            _wait_for(lambda: org_id in listed(), timeout=60, what="the aggregation job to be parked")
            output = listed()
            assert "nobill.usage.aggregate" in output and "totals refused (test)" in output, output
            key = next(line.split()[0] for line in output.splitlines() if org_id in line)
        finally:
            superuser.execute(f"DROP TRIGGER IF EXISTS {trigger} ON usage_totals; DROP FUNCTION IF EXISTS {trigger}()")
        # The cause is gone: replay runs it once more, and the org's totals appear.
        replayed = run_nobill("jobs", "replay", key, env=platform.env)
        assert replayed.returncode == 0 and key in replayed.stdout, replayed.stdout + replayed.stderr
        total = lambda: superuser.execute(  # noqa: E731
            "SELECT sum(quantity) FROM usage_totals WHERE org_id = %s", (org_id,)).fetchone()[0]
        _wait_for(lambda: total() == 12, timeout=30, what="the replayed aggregation")
    assert org_id not in run_nobill("jobs", "parked", env=platform.env).stdout
    unknown = run_nobill("jobs", "replay", "no-such-job", env=platform.env)
    assert unknown.returncode == 1 and "not parked: no-such-job" in unknown.stdout


# --- migrate, audit -----------------------------------------------------------------------------


@covers("migrate")
def test_migrate_on_the_running_platform_is_a_no_op(platform: Platform) -> None:
    from nobill.db.migrate import head_revision

    result = run_nobill("migrate", env=platform.env)
    assert result.returncode == 0, result.stderr
    assert "database migrated to head" in result.stdout
    with psycopg.connect(platform.database_url) as superuser:
        assert superuser.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)


@covers("audit checkpoint", "audit verify")
def test_audit_checkpoint_and_verify(platform: Platform, tmp_path: Path) -> None:
    org_id = _org(platform, "Audit Co")
    checkpoint = tmp_path / "checkpoint.json"
    result = run_nobill("audit", "checkpoint", "-o", str(checkpoint), env=platform.env)
    assert result.returncode == 0, result.stderr
    entries = json.loads(checkpoint.read_text())
    assert org_id in checkpoint.read_text(), entries
    verified = run_nobill("audit", "verify", "--checkpoint", str(checkpoint), env=platform.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{org_id}: valid" in verified.stdout

    # A checkpoint changed by someone without the key no longer verifies.
    tampered = tmp_path / "tampered.json"
    text = checkpoint.read_text()
    hash_of = re.search(r'"hash": "([0-9a-f]{64})"', text).group(1)
    tampered.write_text(text.replace(hash_of, "0" * 64, 1))
    broken = run_nobill("audit", "verify", "--checkpoint", str(tampered), env=platform.env)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout, broken.stdout + broken.stderr


@covers("audit seal")
def test_audit_seal_keeps_sealed_chains_and_refuses_one_that_lost_its_seal(platform: Platform) -> None:
    kept, stripped = _org(platform, "Sealed Co"), _org(platform, "Unsealed Co")
    result = run_nobill("audit", "seal", "--org", kept, env=platform.env)
    assert result.returncode == 0 and f"{kept}: already sealed, keyed from event 1" in result.stdout, result.stdout + result.stderr
    with psycopg.connect(platform.database_url, autocommit=True) as superuser:
        superuser.execute(  # as an attacker would, to pass an unkeyed history off as pre-key
            "UPDATE audit_chain_heads SET keyed_from_sequence = NULL, seal_key_id = NULL, seal = NULL WHERE org_id = %s",
            (stripped,),
        )
    refused = run_nobill("audit", "seal", "--org", stripped, env=platform.env)
    assert refused.returncode == 1 and f"{stripped}: NOT SEALED" in refused.stdout, refused.stdout + refused.stderr
    verified = run_nobill("audit", "verify", "--org", kept, "--org", stripped, env=platform.env)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert f"{kept}: valid" in verified.stdout and f"{stripped}: BROKEN" in verified.stdout, verified.stdout
    assert _chain_is_valid(platform, kept) and not _chain_is_valid(platform, stripped)


# --- the long-running commands ------------------------------------------------------------------


@covers("serve")
def test_serve_on_the_platform_database_answers_and_stops_on_sigterm(platform: Platform) -> None:
    port = _free_port()
    process = start_nobill(
        "serve", env={**platform.env, "NOBILL_GRPC_ADDR": f"127.0.0.1:{port}", "NOBILL_USAGE_GRPC_ADDR": f"127.0.0.1:{_free_port()}"}
    )
    try:
        org_id = _org(platform, "Serve Co")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            got = platform.client(channel).tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org_id))
            assert got.organization.name == "Serve Co"  # the platform's data, through this server
            # A change through it writes a keyed audit event the platform's chain accepts.
            platform.client(channel).tenancy.AddMember(
                tenancy_pb2.AddMemberRequest(org_id=org_id, email="served@example.com", role=common_pb2.ROLE_MEMBER)
            )
    finally:
        stop_nobill(process)
    assert "member.added" in _audit_actions(platform, org_id)
    assert _chain_is_valid(platform, org_id)


def _queued(redis, namespace: str) -> int:  # noqa: ANN001
    """Messages waiting or in hand on every queue of `namespace`."""
    return sum(redis.hlen(key) for key in redis.scan_iter(f"{namespace}:*.msgs"))


def _redis(platform: Platform):  # noqa: ANN202
    import redis

    return redis.Redis.from_url(platform.env["NOBILL_REDIS_URL"])


@covers("scheduler", "worker")
def test_scheduler_enqueues_and_worker_runs_the_periodic_jobs(platform: Platform) -> None:
    # Their own queues on the platform's Redis and database, so the effect is theirs alone.
    namespace = f"nobill-commands-jobs-{uuid.uuid4().hex[:6]}"
    env = {**platform.env, "NOBILL_REDIS_NAMESPACE": namespace}
    redis = _redis(platform)
    scheduler = start_nobill("scheduler", env=env)
    try:
        _wait_for(lambda: redis.get(f"{namespace}:scheduler:leader"), what="the scheduler to lead")
        _wait_for(lambda: _queued(redis, namespace) > 0, what="periodic jobs to be enqueued")
        worker = start_nobill("worker", "--threads", "2", env=env)
        try:
                        # Stop enqueueing, so "all done" can be seen.
            _, scheduler_log = stop_nobill(scheduler)
            _wait_for(lambda: _queued(redis, namespace) == 0, what="the worker to run the jobs")
        finally:
            _, worker_log = stop_nobill(worker)
    finally:
        if scheduler.poll() is None:
            stop_nobill(scheduler)
    assert redis.get(f"{namespace}:scheduler:leader") is None  # the lease is released on stop
    for log in (worker_log, scheduler_log):
        assert '"level": "critical"' not in log and '"level": "error"' not in log, log[-3000:]
    # Once a second at INFO would drown everything else.
    assert '"msg": "scheduled"' not in scheduler_log


@covers("webhooks")
def test_webhooks_stores_a_signed_delivery_in_the_platform(platform: Platform) -> None:
    import stripe

    port = _free_port()
    process = start_nobill("webhooks", "--addr", f"127.0.0.1:{port}", env=platform.env)
    event_id = f"evt_cmd_{uuid.uuid4().hex[:12]}"
    body = json.dumps({
        "id": event_id, "object": "event", "type": "product.updated", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "data": {"object": {"id": "prod_x", "object": "product"}},
    })
    secret = platform.env["NOBILL_STRIPE_WEBHOOK_SECRETS"].split(",")[-1]
    try:
        def post() -> int | None:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                signature = stripe.WebhookSignature.generate_signature_header(body, secret)  # type: ignore[attr-defined]
                connection.request("POST", "/stripe/webhooks", body=body, headers={"Stripe-Signature": signature})
                return connection.getresponse().status
            except OSError:
                return None

        status: list[int | None] = []
        _wait_for(lambda: status.append(post()) or status[-1] is not None, what="the sidecar")
        assert status[-1] == 200
    finally:
        stop_nobill(process)
    with psycopg.connect(platform.database_url) as superuser:
        # No org's customer: only its id and type are kept (stripe_event_ids), not its body.
        assert superuser.execute(
            "SELECT event_type, org_id FROM stripe_event_ids WHERE event_id = %s", (event_id,)
        ).fetchone() == ("product.updated", None)


@covers("sandbox")
def test_sandbox_serves_the_stripe_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    import stripe

    port = _free_port()
    process = start_nobill("sandbox", "--port", str(port), env={})
    try:
        client = stripe.StripeClient("sk_test_commands", base_addresses={"api": f"http://127.0.0.1:{port}"})

        def customer() -> str | None:
            try:
                return client.v1.customers.create({"email": "sandbox@example.com"}).id
            except stripe.APIConnectionError:
                return None

        created: list[str | None] = []
        _wait_for(lambda: created.append(customer()) or created[-1], what="the sandbox")
        assert client.v1.customers.retrieve(created[-1]).email == "sandbox@example.com"
    finally:
        stop_nobill(process)


# --- the README's tour, as a new user runs it ---------------------------------------------------


def readme_tour_blocks() -> list[str]:
    """The Python blocks of "A short tour" and "Sending usage", in order."""
    readme = (ROOT / "README.md").read_text()
    blocks = []
    for section in ("## A short tour", "## Sending usage"):
        text = readme.split(section, 1)[1].split("\n## ", 1)[0]
        blocks += re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    return blocks


def test_the_readme_tour_runs_against_dev(platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    blocks = readme_tour_blocks()
    assert len(blocks) == 4
    monkeypatch.chdir(platform.data_dir.parent)  # where `.nobill/dev.json` is, as after `make dev`
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "TRIALING" in out and "member.added" in out and "valid: true" in out
    assert 'reason: "FIELD_REQUIRED"' in out and 'field: "name"' in out, out
    assert "b'" not in out  # details unpacked, not printed as raw bytes
    assert namespace["subscription"]().has_payment_method
    assert namespace["recorder"].stats.accepted == 2 and namespace["recorder"].stats.duplicates == 1


def test_dev_help_names_everything_it_starts() -> None:
    result = run_nobill("dev", "--help", env={})
    text = " ".join(result.stdout.split())
    for part in ("scheduler", "webhook sidecar", "worker", "Stripe sandbox", "dev.env"):
        assert part in text, text
