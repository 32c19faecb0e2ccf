"""An operator gives an Enterprise org its own base price; checkout uses it."""

from __future__ import annotations

from billing_helpers import BillingWorld, audit_events
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.billing import enterprise, outbox
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import common_pb2


def test_an_enterprise_org_gets_its_own_base_price(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.customer_id(org_id)
    operator = AuditContext(Actor(ActorType.SYSTEM, "cli:ops", "operator ops"), "cli-test")
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        row_id = enterprise.set_price(uow=uow, org_id=org_id, amount=123_400, context=operator)
        uow.commit()
    gateway = StripeGateway.from_settings(billing.settings)
    assert outbox.run(database=billing.database, gateway=gateway, org_id=org_id, outbox_id=row_id) in ("done", "skipped")
    billing.wait_settled(org_id)
    price = billing.stripe.v1.prices.list({"lookup_keys": [enterprise.lookup_key(org_id)]}).data[0]
    assert price.unit_amount == 123_400 and price.product == "nobill_enterprise"

    session = billing.checkout(owner, org_id, common_pb2.PLAN_ENTERPRISE)
    items = billing.stripe.v1.checkout.sessions.line_items.list(session.checkout_session_id, {"limit": 100}).data
    assert price.id in {item.price.id for item in items}
    assert "nobill_enterprise_base_monthly" not in {item.price.lookup_key for item in items}
    actions = {e.action for e in audit_events(owner, org_id)}
    assert {"billing.enterprise_price_requested", "billing.enterprise_price_set"} <= actions
