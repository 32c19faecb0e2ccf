"""The checked-in catalog and its rules."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources

import pytest

from nobill.billing import plans


def _raw() -> dict:
    return tomllib.loads(resources.files("nobill.billing").joinpath("catalog.toml").read_text())


def test_the_catalog_has_the_three_plans_as_the_issue_describes_them() -> None:
    catalog = plans.catalog()
    starter, pro, enterprise = (catalog.plans[code] for code in plans.PlanCode)
    assert starter.max_members == 1 and not starter.metered_usage and starter.seat_amount == 0
    assert pro.base_amount > 0 and pro.seat_amount > 0 and pro.usage_tracked and not pro.metered_usage
    assert enterprise.metered_usage and {"priority_support", "advanced_audit"} <= set(enterprise.features)
    assert sorted(p.meter for p in enterprise.prices if p.meter) == sorted(plans.METRICS)
    assert [m.event_name for m in catalog.meters] == list(plans.METRICS)
    assert catalog.trial_plan is plans.PlanCode.PRO and catalog.trial_length.days == 14


def test_every_price_is_named_by_a_unique_lookup_key() -> None:
    keys = [price.lookup_key for plan in plans.list_() for price in plan.prices]
    assert len(keys) == len(set(keys))
    assert plans.catalog().by_lookup_key("nobill_pro_seat_monthly").role is plans.PriceRole.SEAT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["meters"].pop("api_requests"), "meters must be exactly"),
        (lambda raw: raw["plans"].pop("pro"), "plans.pro is missing"),
        (lambda raw: raw["plans"]["pro"]["prices"].pop("base"), "needs a base price"),
        (lambda raw: raw["plans"]["pro"]["prices"]["seat"].update(lookup_key="nobill_starter_base_monthly"), "unique"),
        (lambda raw: raw["plans"]["enterprise"]["prices"]["api_requests"].update(meter="clicks"), "unknown meter"),
        (lambda raw: raw["plans"]["starter"]["prices"]["base"].update(unit_amount=-1), "whole number of cents"),
        (lambda raw: raw.update(currency="USD"), "lower-case ISO 4217"),
        (lambda raw: raw["trial"].update(plan="gold"), "trial.plan"),
    ],
)
def test_a_broken_catalog_is_refused_with_a_message_naming_the_problem(change, message: str) -> None:  # noqa: ANN001
    raw = copy.deepcopy(_raw())
    change(raw)
    with pytest.raises(plans.CatalogError, match=message):
        plans.parse(raw)
