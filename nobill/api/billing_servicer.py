"""BillingService: proto ⇄ domain for plans. The subscription RPCs answer UNIMPLEMENTED
(the generated base class) until the billing capability lands."""

from __future__ import annotations

from nobill.api import convert
from nobill.api.context import CallContext
from nobill.billing import plans
from nobill.v1 import billing_pb2, billing_pb2_grpc


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
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
