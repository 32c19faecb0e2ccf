"""`nobill stripe sync` against a fresh sandbox: creates everything, a second run changes
nothing, a changed amount moves the lookup key to a new price."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tomllib
from importlib import resources

from billing_helpers import stripe_client
from nobill.billing import plans
from nobill.billing.catalog_sync import sync
from nobill.config import Settings
from nobill.stripe.gateway import StripeGateway


def test_sync_is_idempotent_and_moves_a_lookup_key_when_an_amount_changes() -> None:
    from nobill.sandbox.server import start_sandbox

    with start_sandbox(host="127.0.0.1", port=0, state_file=None, autosave_interval=None) as sandbox:
        gateway = StripeGateway.from_settings(
            Settings.from_env({"STRIPE_API_KEY": "sk_test_sync", "NOBILL_STRIPE_API_BASE": sandbox.url})
        )
        first = sync(gateway)
        assert len(first.created) == 3 + 3 + 7 and not first.updated
        second = sync(gateway)
        assert not second.changed and len(second.unchanged) == 13

        client = stripe_client(sandbox.url)
        meters = {m.event_name: m for m in client.v1.billing.meters.list({"limit": 100}).data}
        assert set(meters) == set(plans.METRICS)
        for meter in meters.values():
            assert meter.default_aggregation.formula == "sum"
            assert meter.customer_mapping.event_payload_key == "stripe_customer_id"
            assert meter.value_settings.event_payload_key == "value"
        old = client.v1.prices.list({"lookup_keys": ["nobill_pro_seat_monthly"]}).data[0]
        metered = client.v1.prices.list({"lookup_keys": ["nobill_enterprise_api_requests"]}).data[0]
        assert metered.recurring.usage_type == "metered" and metered.recurring.meter == meters["api_requests"].id

        raw = copy.deepcopy(tomllib.loads(resources.files("nobill.billing").joinpath("catalog.toml").read_text()))
        raw["plans"]["pro"]["prices"]["seat"]["unit_amount"] = 1500
        third = sync(gateway, catalog=plans.parse(raw))
        assert third.updated == ["price nobill_pro_seat_monthly"] and not third.created
        new = client.v1.prices.list({"lookup_keys": ["nobill_pro_seat_monthly"]}).data[0]
        assert new.id != old.id and new.unit_amount == 1500
        assert client.v1.prices.retrieve(old.id).active is False
        assert not sync(gateway, catalog=plans.parse(raw)).changed


def test_the_cli_shows_progress_and_a_second_run_changes_nothing() -> None:
    from nobill.sandbox.server import start_sandbox

    with start_sandbox(host="127.0.0.1", port=0, state_file=None, autosave_interval=None) as sandbox:
        env = {**os.environ, "STRIPE_API_KEY": "sk_test_cli", "NOBILL_STRIPE_API_BASE": sandbox.url, "NOBILL_LOG_LEVEL": "ERROR"}
        runs = [
            subprocess.run([sys.executable, "-m", "nobill.cli", "stripe", "sync"], env=env, capture_output=True, text=True, timeout=60)
            for _ in range(2)
        ]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr
    assert "created  price nobill_pro_base_monthly" in runs[0].stdout
    assert "done: 13 created, 0 updated, 0 unchanged" in runs[0].stdout
    assert "done: 0 created, 0 updated, 13 unchanged" in runs[1].stdout
