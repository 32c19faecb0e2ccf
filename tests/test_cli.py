"""The `nobill` command: help, configuration errors, tokens, migrations, serve and dev."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from nobill.auth.tokens import JwtSettings, TokenVerifier
from nobill.v1 import billing_pb2, common_pb2, tenancy_pb2
from support import TEST_AUDIT_KEY, TEST_SECRET, Client, mint, with_database

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["serve", "worker", "migrate", "token", "audit", "dev", "sandbox", "scheduler", "stripe", "webhooks"]


def nobill(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "STRIPE_"))}
    return subprocess.run(
        [sys.executable, "-m", "nobill.cli", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_top_level_help_lists_every_command() -> None:
    result = nobill("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = nobill(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: nobill {command}" in result.stdout


def test_serve_without_a_database_names_the_setting() -> None:
    result = nobill("serve")
    assert result.returncode == 2
    assert "NOBILL_DATABASE_URL" in result.stderr


def test_serve_without_jwt_keys_names_the_setting(database_url: str) -> None:
    result = nobill("serve", env={"NOBILL_DATABASE_URL": database_url, "NOBILL_GRPC_ADDR": "127.0.0.1:0"})
    assert result.returncode == 2
    assert "NOBILL_JWT_SECRET" in result.stderr


def test_a_malformed_setting_stops_start_up_with_its_name() -> None:
    result = nobill("serve", env={"NOBILL_GRPC_THREADS": "lots"})
    assert result.returncode == 2 and "NOBILL_GRPC_THREADS" in result.stderr


def test_serve_on_a_taken_address_names_the_setting(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = nobill(
            "serve",
            env={"NOBILL_DATABASE_URL": database_url, "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY,
                 "NOBILL_GRPC_ADDR": f"127.0.0.1:{port}"},
        )
    assert result.returncode == 2, result.stderr
    assert "NOBILL_GRPC_ADDR" in result.stderr and "cannot listen" in result.stderr


def test_worker_without_redis_names_the_setting() -> None:
    result = nobill("worker")
    assert result.returncode == 2 and "NOBILL_REDIS_URL" in result.stderr


@pytest.mark.e2e
def test_worker_starts_and_stops_on_sigterm(redis_url: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nobill.cli", "worker", "--threads", "1"],
        env={**os.environ, "NOBILL_REDIS_URL": redis_url, "NOBILL_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    lines: list[str] = []
    _wait_for(lambda: bool(lines.append(process.stderr.readline()) or "worker started" in lines[-1]), timeout=30,
              what="worker start")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "worker stopping" in stderr


def test_token_mints_a_verifiable_service_token() -> None:
    result = nobill(
        "token", "--service", "--sub", "billing-sidecar", "--scope", "webhooks:ingest", "--org", "*",
        env={"NOBILL_JWT_SECRET": TEST_SECRET},
    )
    assert result.returncode == 0, result.stderr
    claims = TokenVerifier(JwtSettings(TEST_SECRET, None, "nobill", "nobill")).verify(result.stdout.strip())
    assert claims["sub"] == "billing-sidecar" and claims["scope"] == "webhooks:ingest"
    assert claims["nobill/principal"] == "service" and claims["nobill/orgs"] == ["*"]


def test_token_longer_than_the_maximum_lifetime_is_refused() -> None:
    result = nobill("token", "--ttl", str(7 * 86400), env={"NOBILL_JWT_SECRET": TEST_SECRET})

    assert result.returncode == 2 and "--ttl" in result.stderr and "86400" in result.stderr


def test_token_without_a_secret_explains_what_to_set(tmp_path: Path) -> None:
    result = nobill("token", env={"NOBILL_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2 and "NOBILL_JWT_SECRET" in result.stderr


def test_migrate_creates_the_schema_and_is_idempotent(postgres_admin_url: str) -> None:
    name = f"nobill_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_admin_url, name)
    try:
        for _ in range(2):
            result = nobill("migrate", env={"NOBILL_DATABASE_URL": url})
            assert result.returncode == 0, result.stderr
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_org(address: str, token: str) -> tenancy_pb2.Organization:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        client = Client(channel, token)
        return client.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="CLI Co")).organization


@pytest.mark.e2e
def test_serve_runs_several_processes_on_one_port_and_stops_on_sigterm(database_url: str) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nobill.cli", "serve", "--processes", "2"],
        env={**os.environ, "NOBILL_DATABASE_URL": database_url, "NOBILL_JWT_SECRET": TEST_SECRET,
             "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY, "NOBILL_GRPC_ADDR": f"127.0.0.1:{port}",
             "NOBILL_USAGE_GRPC_ADDR": f"127.0.0.1:{_free_port()}", "NOBILL_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        org = _create_org(f"127.0.0.1:{port}", mint())
        assert org.id.startswith("org_")
        # Several connections spread over both processes; all are served.
        for _ in range(6):
            assert _create_org(f"127.0.0.1:{port}", mint()).id
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    pids = {json.loads(line).get("pid") for line in stderr.splitlines() if line.startswith("{") and '"serving"' in line}
    assert len(pids - {None}) == 2, stderr


def test_stopping_the_server_lets_in_flight_calls_finish(settings, database, monkeypatch) -> None:
    import threading

    from nobill.api.server import build_server
    from nobill.api.tenancy_servicer import TenancyServicer

    original = TenancyServicer.GetMyPermissions

    def slow(self, request, context):  # noqa: ANN001
        time.sleep(1.0)
        return original(self, request, context)

    monkeypatch.setattr(TenancyServicer, "GetMyPermissions", slow)
    running = build_server(settings, database)
    token = mint()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        client = Client(channel, token)
        org = client.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Drain")).organization
        outcome: dict = {}

        def call() -> None:
            try:
                outcome["response"] = client.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org.id))
            except grpc.RpcError as error:  # pragma: no cover - reported below
                outcome["error"] = error.code()

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.3)
        running.stop(grace=5)
        thread.join(10)
    assert "error" not in outcome, outcome
    assert "members:manage" in outcome["response"].permissions


def _run_dev(tmp_path: Path, env: dict[str, str]) -> tuple[dict, subprocess.Popen]:
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, "-m", "nobill.cli", "dev", "--data-dir", str(tmp_path / "data"), "--addr", "127.0.0.1:0",
         "--ready-file", str(ready)],
        # The sidecar on a free port: tests (and other dev instances) may run side by side.
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "STRIPE_"))},
             "NOBILL_WEBHOOKS_ADDR": "127.0.0.1:0", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        _wait_for(lambda: ready.exists() or process.poll() is not None, timeout=120, what="nobill dev")
    except AssertionError:
        process.kill()
        raise
    if process.poll() is not None:
        raise AssertionError(f"nobill dev exited: {process.communicate()[1]}")
    return json.loads(Path(ready.read_text()).read_text()), process


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return stdout


@pytest.mark.e2e
def test_dev_uses_configured_servers_and_writes_dev_json(tmp_path: Path, database_url: str, redis_url: str) -> None:
    info, process = _run_dev(tmp_path, {"NOBILL_DATABASE_URL": database_url, "NOBILL_REDIS_URL": redis_url})
    try:
        assert info["database_url"].endswith(database_url.rsplit("/", 1)[1])
        assert info["stripe_api_base"].startswith("http://127.0.0.1:")
        org = _create_org(info["grpc_addr"], info["token"])
        assert org.subscription_status == 1  # trialing
        # dev synced the catalog to its sandbox; its worker creates the org's customer.
        with grpc.insecure_channel(info["grpc_addr"]) as channel:
            session = Client(channel, info["token"]).billing.CreateCheckoutSession(
                billing_pb2.CreateCheckoutSessionRequest(
                    org_id=org.id, plan=common_pb2.PLAN_PRO, success_url="https://example.com/ok",
                    cancel_url="https://example.com/cancel",
                )
            )
        assert session.checkout_session_id.startswith("cs_") and session.url
        # The whole loop: the customer pays on the sandbox, which delivers the webhooks to
        # dev's sidecar, which hands them to the core, whose worker applies them.
        _sandbox_control(info["stripe_api_base"], f"checkout/sessions/{session.checkout_session_id}/complete",
                         {"outcome": "succeeded"})
        with grpc.insecure_channel(info["grpc_addr"]) as channel:
            billing = Client(channel, info["token"]).billing

            def subscribed() -> bool:
                # The org keeps the rest of its trial: Stripe's subscription is trialing, with a card.
                got = billing.GetSubscription(billing_pb2.GetSubscriptionRequest(org_id=org.id)).subscription
                return got.stripe_status == "trialing" and got.has_payment_method and got.plan == common_pb2.PLAN_PRO

            _wait_for(subscribed, timeout=60, what="the checkout's webhooks to reach the org's subscription")
        assert info["webhooks_url"].endswith("/stripe/webhooks")
    finally:
        stdout = _stop(process)
    assert info["grpc_addr"] in stdout and info["token"] in stdout and info["webhooks_url"] in stdout
    assert "syncing the plan catalog to Stripe" in stdout


def _sandbox_control(base_url: str, path: str, body: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(
        f"{base_url}/_sandbox/{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.mark.e2e
def test_dev_starts_everything_embedded_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    info, process = _run_dev(tmp_path, {})
    try:
        assert "host=" in info["database_url"] and info["redis_url"].startswith("unix://")
        org_id = _create_org(info["grpc_addr"], info["token"]).id
    finally:
        _stop(process)
    endpoint = json.loads((tmp_path / "data" / "webhook_endpoint.json").read_text())
    (tmp_path / "ready").unlink()
    info, process = _run_dev(tmp_path, {})
    try:
        with grpc.insecure_channel(info["grpc_addr"]) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            got = Client(channel, info["token"]).tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org_id))
            assert got.organization.name == "CLI Co"
        # The same sandbox endpoint, pointed at the new sidecar: no second endpoint.
        assert json.loads((tmp_path / "data" / "webhook_endpoint.json").read_text()) == endpoint
        import stripe

        listed = stripe.StripeClient(info["stripe_api_key"], base_addresses={"api": info["stripe_api_base"]}).v1.webhook_endpoints.list()
        assert [(item.id, item.url) for item in listed.data] == [(endpoint["id"], info["webhooks_url"])]
    finally:
        _stop(process)


# --- settings a new user gets wrong: exit 2, naming what to fix ----------------------------


def test_serve_with_a_garbage_addr_names_the_flag(database_url: str) -> None:
    result = nobill("serve", "--addr", "garbage", env={"NOBILL_DATABASE_URL": database_url, "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY})
    assert result.returncode == 2, result.stderr
    assert "--addr" in result.stderr and "host:port" in result.stderr and "NOBILL_GRPC_ADDR" not in result.stderr


@pytest.mark.parametrize("count", ["0", "-1"])
def test_serve_with_no_processes_names_the_flag(count: str) -> None:
    result = nobill("serve", "--processes", count, env={"NOBILL_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert result.returncode == 2 and "--processes" in result.stderr


def test_worker_with_no_threads_names_the_flag() -> None:
    result = nobill("worker", "--threads", "0", env={"NOBILL_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2 and "--threads" in result.stderr


def test_a_database_url_pointing_at_nothing_names_the_setting() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = nobill(
        "serve", env={"NOBILL_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/nobill", "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY}
    )
    assert result.returncode == 2, result.stderr
    assert "NOBILL_DATABASE_URL" in result.stderr and "cannot reach PostgreSQL" in result.stderr


@pytest.fixture
def empty_database(postgres_admin_url: str):
    name = f"nobill_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield with_database(postgres_admin_url, name)
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_a_database_that_is_not_migrated(empty_database: str, redis_url: str, command: str) -> None:
    env = {"NOBILL_DATABASE_URL": empty_database, "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY, "NOBILL_REDIS_URL": redis_url}
    result = nobill(command, env=env)
    assert result.returncode == 2, result.stderr
    assert "NOBILL_DATABASE_URL" in result.stderr and "run `nobill migrate`" in result.stderr


def test_serve_refuses_a_database_at_a_revision_it_does_not_know(empty_database: str) -> None:
    assert nobill("migrate", env={"NOBILL_DATABASE_URL": empty_database}).returncode == 0
    with psycopg.connect(empty_database, autocommit=True) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    result = nobill("serve", env={"NOBILL_DATABASE_URL": empty_database, "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY})
    assert result.returncode == 2, result.stderr
    assert "revision 9999" in result.stderr and "does not know" in result.stderr


def test_the_migrations_ship_inside_the_package() -> None:
    from nobill.db.migrate import head_revision, migrations_dir

    assert migrations_dir().name == "migrations" and (migrations_dir() / "env.py").exists()
    assert head_revision()


# --- one server per address ------------------------------------------------------------------


@pytest.mark.e2e
def test_a_second_server_on_the_same_address_is_refused(database_url: str) -> None:
    port = _free_port()
    env = {**os.environ, "NOBILL_DATABASE_URL": database_url, "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY,
           "NOBILL_GRPC_ADDR": f"127.0.0.1:{port}", "NOBILL_USAGE_GRPC_ADDR": f"127.0.0.1:{_free_port()}",
           "NOBILL_LOG_FORMAT": "json"}
    first = subprocess.Popen([sys.executable, "-m", "nobill.cli", "serve"], env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _create_org(f"127.0.0.1:{port}", mint())
        for args in (["serve"], ["serve", "--processes", "2"]):
            second = nobill(*args, env={k: v for k, v in env.items() if k.startswith("NOBILL_")})
            assert second.returncode == 2, second.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "in use" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


@pytest.mark.e2e
def test_several_processes_report_their_summed_metrics(database_url: str) -> None:
    port, metrics_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nobill.cli", "serve", "--processes", "2"],
        env={**os.environ, "NOBILL_DATABASE_URL": database_url, "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY,
             "NOBILL_GRPC_ADDR": f"127.0.0.1:{port}", "NOBILL_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
             "NOBILL_USAGE_GRPC_ADDR": f"127.0.0.1:{_free_port()}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        for _ in range(6):  # one connection each: the kernel spreads them over both processes
            _create_org(f"127.0.0.1:{port}", mint())
        from test_metrics import scrape, value

        text = scrape(metrics_port)
        labels = {"grpc_service": "nobill.v1.TenancyService", "grpc_method": "CreateOrganization", "grpc_code": "OK"}
        assert value(text, "grpc_server_handled_total", **labels) == 6, text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


# --- nobill dev: one per data dir, cleans up after a SIGKILL, quiet cold start --------------------


def _processes_using(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.fixture
def outside_pytest_tmp() -> Iterator[Path]:
    """A directory outside pytest's basetemp: every new pytest session on the machine resets
    /tmp/pytest-of-<user> to 0700, which locks out embedded PostgreSQL's own system user."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="nobill-dev-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.e2e
def test_dev_cold_start_shows_progress_only_and_cleans_up_after_sigkill(outside_pytest_tmp: Path) -> None:
    tmp_path = outside_pytest_tmp
    info, process = _run_dev(tmp_path, {})
    data = tmp_path / "data"
    try:
        # A second `nobill dev` on the same data dir is refused, naming the flag.
        second = nobill("dev", "--data-dir", str(data), "--addr", "127.0.0.1:0", timeout=60)
        assert second.returncode == 2 and "--data-dir" in second.stderr and "in use" in second.stderr
        assert _processes_using(data / "postgres") and _processes_using(data / "redis")
    finally:
        process.kill()  # SIGKILL: nothing of ours runs to clean up
        stdout, stderr = process.communicate(timeout=30)
    lines = [line for line in stdout.splitlines() if line.strip()]
    banner = lines.index("NOBill is running.")
    assert all(line.startswith("==> ") for line in lines[:banner]), stdout
    assert stderr.strip() == "", stderr
    assert (data / "dev.log").stat().st_size > 0
    # Redis keeps its config, log and pid file under the data dir, not in /tmp.
    assert {"redis.conf", "redis.log"} <= {path.name for path in (data / "redis").iterdir()}

    # The next start reuses or replaces what was left running; its stop stops everything.
    (tmp_path / "ready").unlink()
    info, process = _run_dev(tmp_path, {})
    _stop(process)
    _wait_for(lambda: not _processes_using(data), timeout=30, what="embedded servers to stop")
