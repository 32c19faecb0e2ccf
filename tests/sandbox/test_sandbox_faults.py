"""Fault injection: outages (503 or reset connections), random errors, latency, 429s."""

from __future__ import annotations

import time

import pytest
import stripe

from sandbox_helpers import http, new_client


def test_an_outage_answers_503_for_its_duration_while_the_control_api_works(sandbox, client, control):
    faults = control("POST", "/_sandbox/faults", {"outage": {"seconds": 0.6}})
    assert faults["outage"]["mode"] == "503" and 0 < faults["outage"]["remaining_seconds"] <= 0.6
    started = time.monotonic()
    with pytest.raises(stripe.APIError) as caught:
        client.v1.customers.create({})
    assert caught.value.http_status == 503
    assert caught.value.error.type == "api_error"
    assert control("GET", "/_sandbox/health")["status"] == "ok"
    while time.monotonic() - started < 0.7:
        time.sleep(0.05)
    assert client.v1.customers.create({}).id.startswith("cus_")
    assert control("GET", "/_sandbox/faults")["outage"] is None


def test_an_outage_can_reset_connections_instead(sandbox, client, control):
    control("POST", "/_sandbox/faults", {"outage": {"seconds": 30, "mode": "reset"}})
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.list()
    control("DELETE", "/_sandbox/faults")
    assert client.v1.customers.list().data == []


def test_stripe_clients_with_retries_ride_out_a_short_outage(sandbox, control):
    control("POST", "/_sandbox/faults", {"outage": {"seconds": 0.3}})
    patient = new_client(sandbox.url, max_network_retries=5)
    assert patient.v1.customers.create({}, {"idempotency_key": "during-outage"}).id.startswith("cus_")


def test_random_errors_before_the_request_runs(client, control):
    control("POST", "/_sandbox/faults", {"error_rate": {"rate": 1.0, "status": 502}})
    with pytest.raises(stripe.APIError) as caught:
        client.v1.customers.create({"email": "never@example.com"})
    assert caught.value.http_status == 502
    control("POST", "/_sandbox/faults", {"error_rate": None})
    assert client.v1.customers.list({"email": "never@example.com"}).data == []
    control("POST", "/_sandbox/faults", {"error_rate": {"rate": 0.5, "status": 500}, "seed": 3})
    outcomes = []
    for _ in range(40):
        try:
            client.v1.customers.list({"limit": 1})
            outcomes.append("ok")
        except stripe.APIError:
            outcomes.append("error")
    assert 8 <= outcomes.count("error") <= 32


def test_errors_after_commit_lose_the_answer_and_an_idempotent_retry_recovers_it(sandbox, client, control):
    control("POST", "/_sandbox/faults", {"error_rate": {"rate": 1.0, "status": "reset", "after_commit": True}})
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.create({"email": "lost@example.com"}, {"idempotency_key": "retry-me"})
    control("DELETE", "/_sandbox/faults")
    retried = client.v1.customers.create({"email": "lost@example.com"}, {"idempotency_key": "retry-me"})
    assert retried.last_response.headers["Idempotent-Replayed"] == "true"
    assert [c.id for c in client.v1.customers.list({"email": "lost@example.com"}).data] == [retried.id]


def test_faults_can_target_one_path(client, control, catalog):
    control("POST", "/_sandbox/faults", {"error_rate": {"rate": 1.0, "path_prefix": "/v1/billing/meter_events"}})
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.APIError):
        client.v1.billing.meter_events.create({"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "1"}})


def test_latency_is_added_to_api_calls(client, control):
    control("POST", "/_sandbox/faults", {"latency": {"ms": 250}})
    started = time.monotonic()
    client.v1.customers.list()
    assert time.monotonic() - started >= 0.25
    control("POST", "/_sandbox/faults", {"latency": None})
    started = time.monotonic()
    client.v1.customers.list()
    assert time.monotonic() - started < 0.25


def test_rate_limiting_answers_429(sandbox, client, control):
    control("POST", "/_sandbox/faults", {"rate_limit": {"requests_per_second": 0.5, "burst": 2}})
    client.v1.customers.list()
    client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.customers.list()
    assert (caught.value.http_status, caught.value.error.code) == (429, "rate_limit")
    status, _, _ = http(sandbox.url + "/_sandbox/health")
    assert status == 200


def test_fault_settings_are_validated(control):
    control("POST", "/_sandbox/faults", {"earthquake": {}}, expect=400)
    control("POST", "/_sandbox/faults", {"outage": {"seconds": -1}}, expect=400)
    control("POST", "/_sandbox/faults", {"outage": {"seconds": 1, "mode": "fire"}}, expect=400)
    control("POST", "/_sandbox/faults", {"error_rate": {"rate": 2}}, expect=400)
    control("POST", "/_sandbox/faults", {"error_rate": {"rate": 0.1, "status": 404}}, expect=400)
    control("POST", "/_sandbox/faults", {"latency": {"ms": 10, "path_prefix": "/_sandbox"}}, expect=400)
    assert control("GET", "/_sandbox/faults") == {"outage": None, "error_rate": None, "latency": None, "rate_limit": None}
