"""BillingService: proto ⇄ domain for plans, subscriptions, checkout, invoices,
entitlements and the webhook inbox."""

from __future__ import annotations

import datetime as dt

from nobill.api import convert
from nobill.api.context import CallContext, OrgCallContext
from nobill.billing import inbox, plans, service
from nobill.billing.subscriptions import ItemDrift, Subscription
from nobill.config import Settings
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import billing_pb2, billing_pb2_grpc, common_pb2


_DRIFT_KIND = {
    "base_quantity": billing_pb2.SUBSCRIPTION_DRIFT_KIND_BASE_QUANTITY,
    "seat_quantity": billing_pb2.SUBSCRIPTION_DRIFT_KIND_SEAT_QUANTITY,
    "unknown_price": billing_pb2.SUBSCRIPTION_DRIFT_KIND_UNKNOWN_PRICE,
    "missing_item": billing_pb2.SUBSCRIPTION_DRIFT_KIND_MISSING_ITEM,
}


def _drift(value: ItemDrift) -> billing_pb2.SubscriptionDrift:
    return billing_pb2.SubscriptionDrift(
        kind=_DRIFT_KIND.get(value.kind, billing_pb2.SUBSCRIPTION_DRIFT_KIND_UNSPECIFIED),
        subscription_item_id=value.subscription_item_id,
        price=value.price,
        expected_quantity=value.expected_quantity,
        actual_quantity=value.actual_quantity,
        correcting=value.correcting,
        message=value.message,
    )


def _subscription(value: Subscription) -> billing_pb2.Subscription:
    return billing_pb2.Subscription(
        org_id=value.org_id,
        plan=convert.PLAN_TO_PROTO[value.plan],
        status=convert.STATUS_TO_PROTO[value.status],
        trial_end=convert.timestamp(value.trial_end),
        current_period_end=convert.timestamp(value.current_period_end),
        cancel_at_period_end=value.cancel_at_period_end,
        seats=value.seats,
        has_payment_method=value.has_payment_method,
        pending_plan=convert.PLAN_TO_PROTO[value.pending_plan] if value.pending_plan else common_pb2.PLAN_UNSPECIFIED,
        sync_error=value.sync_error or "",
        current_period_start=convert.timestamp(value.current_period_start),
        stripe_status=value.stripe_status or "",
        drift=[_drift(d) for d in value.drift],
    )


def _invoice(value: service.Invoice) -> billing_pb2.Invoice:
    return billing_pb2.Invoice(
        id=value.invoice_id,
        number=value.number,
        status=value.status,
        currency=value.currency,
        amount_due=value.amount_due,
        amount_paid=value.amount_paid,
        period_start=convert.timestamp(value.period_start),
        period_end=convert.timestamp(value.period_end),
        create_time=convert.timestamp(value.created_at),
        hosted_invoice_url=value.hosted_invoice_url,
    )


_OUTCOME = {
    inbox.STORED: billing_pb2.STRIPE_DELIVERY_OUTCOME_STORED,
    inbox.DUPLICATE: billing_pb2.STRIPE_DELIVERY_OUTCOME_DUPLICATE,
    inbox.REJECTED: billing_pb2.STRIPE_DELIVERY_OUTCOME_REJECTED,
}
_REJECT_REASON = {
    reason: billing_pb2.StripeDeliveryRejectReason.Value(f"STRIPE_DELIVERY_REJECT_REASON_{reason}")
    for reason in inbox.REJECT_REASONS
}


def _delivery_result(value: inbox.DeliveryResult) -> billing_pb2.StripeDeliveryResult:
    return billing_pb2.StripeDeliveryResult(
        outcome=_OUTCOME[value.outcome],
        event_id=value.event_id,
        event_type=value.event_type,
        reject_reason=_REJECT_REASON.get(value.reject_reason, billing_pb2.STRIPE_DELIVERY_REJECT_REASON_UNSPECIFIED),
        message=value.message,
    )


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, settings: Settings, gateway: StripeGateway) -> None:
        self._settings = settings
        self._gateway = gateway
        self._apply_delay = settings.stripe_event_apply_delay_ms / 1000

    def ListPlans(self, request, context: CallContext):  # noqa: N802, ANN001
        return billing_pb2.ListPlansResponse(
            plans=[
                billing_pb2.PlanDetails(
                    plan=convert.PLAN_TO_PROTO[plan.code],
                    display_name=plan.display_name,
                    currency=plan.currency,
                    base_amount=plan.base_amount,
                    seat_amount=plan.seat_amount,
                    included_seats=plan.included_seats,
                    max_members=plan.max_members,
                    metered_usage=plan.metered_usage,
                    unit_amount_decimal=plan.unit_amount_decimal,
                )
                for plan in plans.list_()
            ]
        )

    def GetSubscription(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        value = service.get(uow=context.uow, org_id=request.org_id)
        return billing_pb2.GetSubscriptionResponse(subscription=_subscription(value))

    def CreateCheckoutSession(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        session = service.create_checkout_session(
            uow=context.uow,
            database=context.database,
            org_id=request.org_id,
            gateway=self._gateway,
            context=context.audit,
            plan=convert.plan_from_proto(request.plan),
            success_url=request.success_url,
            cancel_url=request.cancel_url,
        )
        return billing_pb2.CreateCheckoutSessionResponse(checkout_session_id=session.session_id, url=session.url)

    def ChangePlan(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        value = service.change_plan(
            uow=context.uow,
            database=context.database,
            org_id=request.org_id,
            gateway=self._gateway,
            context=context.audit,
            plan=convert.plan_from_proto(request.plan),
        )
        return billing_pb2.ChangePlanResponse(subscription=_subscription(value))

    def CancelSubscription(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        value = service.cancel(
            uow=context.uow,
            database=context.database,
            org_id=request.org_id,
            gateway=self._gateway,
            context=context.audit,
            at_period_end=request.at_period_end,
        )
        return billing_pb2.CancelSubscriptionResponse(subscription=_subscription(value))

    def ListInvoices(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        found, next_token = service.list_invoices(
            uow=context.uow, org_id=request.org_id, page_size=request.page_size, page_token=request.page_token
        )
        return billing_pb2.ListInvoicesResponse(invoices=[_invoice(i) for i in found], next_page_token=next_token)

    def GetEntitlements(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        value = service.entitlements(
            uow=context.uow, org_id=request.org_id, grace=dt.timedelta(days=self._settings.past_due_grace_days)
        )
        return billing_pb2.GetEntitlementsResponse(
            plan=convert.PLAN_TO_PROTO[value.plan],
            status=convert.STATUS_TO_PROTO[value.status],
            access_allowed=value.access_allowed,
            max_members=value.max_members,
            metered_usage=value.metered_usage,
            features=list(value.features),
        )

    def IngestStripeEvent(self, request, context: CallContext):  # noqa: N802, ANN001
        with context.unit_of_work() as uow:
            stored = inbox.ingest(
                uow=uow,
                payload=request.payload,
                signature_header=request.signature_header,
                secrets=self._settings.stripe_webhook_secrets,
                apply_delay=self._apply_delay,
            )
        return billing_pb2.IngestStripeEventResponse(
            event_id=stored.event_id, event_type=stored.event_type, duplicate=stored.duplicate
        )

    def IngestStripeEvents(self, request, context: CallContext):  # noqa: N802, ANN001
        deliveries = [inbox.Delivery(d.payload, d.signature_header) for d in request.deliveries]
        with context.unit_of_work() as uow:
            results = inbox.ingest_batch(
                uow=uow, deliveries=deliveries, secrets=self._settings.stripe_webhook_secrets, apply_delay=self._apply_delay
            )
        return billing_pb2.IngestStripeEventsResponse(results=[_delivery_result(result) for result in results])
