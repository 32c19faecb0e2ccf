"""Running the sandbox: start_sandbox's handle, persistence across restarts, the control
API's housekeeping endpoints, the CLI in a real process, and concurrent clients."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import stripe

from nobill.sandbox import cli
from nobill.sandbox.server import start_sandbox
from sandbox_helpers import advance, call_control, fast_settings, http, new_client

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_handle_serves_on_a_free_port_and_stops(tmp_path):
    with start_sandbox(port=0, settings=fast_settings()) as handle:
        assert handle.url == f"http://127.0.0.1:{handle.port}" and handle.port > 0
        assert call_control(handle.url, "GET", "/_sandbox/health")[1]["status"] == "ok"
        status, _, body = http(handle.url + "/")
        assert status == 200 and json.loads(body)["api"] == f"{handle.url}/v1"
    with pytest.raises(stripe.APIConnectionError):
        new_client(handle.url).v1.customers.list()
    handle.stop()  # stopping twice is harmless


def test_state_survives_a_restart_through_the_state_file(tmp_path, webhook_receiver):
    state_file = tmp_path / "sandbox" / "state.json"
    with start_sandbox(port=0, state_file=state_file, settings=fast_settings(), autosave_interval=None) as first:
        client = new_client(first.url)
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(time.time())})
        customer = client.v1.customers.create({"email": "kept@example.com", "test_clock": clock.id, "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
        product = client.v1.products.create({"name": "Kept"})
        price = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 700, "recurring": {"interval": "month"}, "lookup_key": "kept"})
        subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id, "quantity": 2}]})
        endpoint = client.v1.webhook_endpoints.create({"url": webhook_receiver.url, "enabled_events": ["invoice.paid"]})
        events_before = [e.id for e in client.v1.events.list({"limit": 100}).data]
    saved = json.loads(state_file.read_text())
    assert saved["format"] == 1 and not list(state_file.parent.glob("*.tmp"))
    with start_sandbox(port=0, state_file=state_file, settings=fast_settings(), autosave_interval=None) as second:
        client = new_client(second.url)
        assert client.v1.customers.retrieve(customer.id).email == "kept@example.com"
        assert client.v1.subscriptions.retrieve(subscription.id)["items"].data[0].quantity == 2
        assert [p.id for p in client.v1.prices.list({"lookup_keys": ["kept"]}).data] == [price.id]
        assert [e.id for e in client.v1.events.list({"limit": 100}).data] == events_before
        assert client.v1.webhook_endpoints.retrieve(endpoint.id).url == webhook_receiver.url
        period_end = client.v1.subscriptions.retrieve(subscription.id)["items"].data[0].current_period_end
        advance(client, clock, period_end + 3600)
        renewal = client.v1.invoices.list({"subscription": subscription.id}).data[0]
        assert (renewal.status, renewal.amount_paid, renewal.number[-4:]) == ("paid", 1400, "0002")
        # The restored endpoint (and its secret) still receive signed events.
        [delivery] = webhook_receiver.wait_for(lambda got: len(got) == 1)
        secret = json.loads(state_file.read_text())["collections"]["webhook_endpoints"][0]["secret"]
        assert client.construct_event(delivery.body, delivery.headers["Stripe-Signature"], secret).type == "invoice.paid"


def test_state_is_saved_while_running(tmp_path):
    state_file = tmp_path / "state.json"
    with start_sandbox(port=0, state_file=state_file, settings=fast_settings(), autosave_interval=0.1) as handle:
        customer = new_client(handle.url).v1.customers.create({})
        deadline = time.monotonic() + 5
        while not (state_file.exists() and customer.id in state_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert customer.id in state_file.read_text()
        assert call_control(handle.url, "POST", "/_sandbox/state/save")[1] == {"saved": str(state_file)}


def test_control_housekeeping(sandbox, client, control):
    client.v1.customers.create({})
    control("POST", "/_sandbox/settings", {"dunning_retry_days": [2, 4]})
    control("POST", "/_sandbox/faults", {"latency": {"ms": 1}})
    control("POST", "/_sandbox/settings", {"dunning_retry_days": [4, 2]}, expect=400)
    control("POST", "/_sandbox/settings", {"colour": "red"}, expect=400)
    control("POST", "/_sandbox/settings", {"dunning_final_action": "explode"}, expect=400)
    control("GET", "/_sandbox/nothing", expect=404)
    control("POST", "/_sandbox/state/save", expect=400)  # the session sandbox has no state file
    status, _, _ = http(sandbox.url + "/_sandbox/faults", "POST", b"not json", {"Content-Type": "application/json"})
    assert status == 400
    assert control("POST", "/_sandbox/reset") == {"reset": True}
    assert client.v1.customers.list().data == []
    assert control("GET", "/_sandbox/settings")["dunning_retry_days"] == [3, 5, 7]
    assert control("GET", "/_sandbox/faults")["latency"] is None


def test_concurrent_clients_each_get_consistent_answers(sandbox, catalog):
    client = new_client(sandbox.url)
    customer = client.v1.customers.create({"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 1}]})
    item_id = subscription["items"].data[0].id
    created: list[str] = []
    errors: list[Exception] = []

    def work(worker: int) -> None:
        local = new_client(sandbox.url)
        try:
            for n in range(25):
                created.append(local.v1.customers.create({"metadata": {"w": str(worker), "n": str(n)}}).id)
                local.v1.subscription_items.update(item_id, {"quantity": worker * 100 + n + 2, "proration_behavior": "none"})
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(created) == len(set(created)) == 200
    assert len(list(client.v1.customers.list({"limit": 100}).auto_paging_iter())) == 201
    final_quantity = client.v1.subscription_items.retrieve(item_id).quantity
    updates = client.v1.events.list({"type": "customer.subscription.updated", "limit": 1}).data[0]
    assert updates.data.object["items"]["data"][0]["quantity"] == final_quantity


def test_cli_arguments_and_defaults():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.state_file) == ("127.0.0.1", 12111, None)
    args = parser.parse_args(["--port", "0", "--state-file", "x.json", "--webhook-retry-schedule", "1,2.5", "--dunning-retry-days", "1,2"])
    assert (args.port, args.state_file, args.webhook_retry_schedule, args.dunning_retry_days) == (0, Path("x.json"), (1.0, 2.5), (1, 2))
    with pytest.raises(SystemExit):
        parser.parse_args(["--dunning-retry-days", "5,1"])
    assert cli._settings(parser.parse_args(["--test-clock-advance-delay", "1.5"])).test_clock_advance_delay == 1.5
    assert cli._settings(parser.parse_args([])).test_clock_advance_delay == 0.2


def test_the_cli_runs_in_the_foreground_and_stops_gracefully_on_sigterm(tmp_path):
    state_file = tmp_path / "dev-state.json"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "nobill.sandbox", "--port", "0", "--state-file", str(state_file), "--log-format", "json", "--autosave-interval", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith("Stripe sandbox listening on http://127.0.0.1:")
        url = first_line.rsplit(" ", 1)[1].strip()
        customer = new_client(url).v1.customers.create({"email": "cli@example.com"})
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert customer.id in state_file.read_text()
    logs = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]  # type: ignore[union-attr]
    messages = [entry["message"] for entry in logs]
    assert "Stripe sandbox listening" in messages and "Stripe sandbox stopped" in messages
    assert next(entry for entry in logs if entry["message"] == "Stripe sandbox listening")["url"] == url
