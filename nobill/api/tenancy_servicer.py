"""TenancyService: proto ⇄ domain for organizations and memberships."""

from __future__ import annotations

from nobill import ids
from nobill.api import convert
from nobill.api.context import CallContext, OrgCallContext
from nobill.auth.principals import UserPrincipal
from nobill.tenancy import service as tenancy
from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc


def _organization(org: tenancy.Organization) -> tenancy_pb2.Organization:
    return tenancy_pb2.Organization(
        id=org.org_id,
        name=org.name,
        plan=convert.PLAN_TO_PROTO[org.plan],
        subscription_status=convert.STATUS_TO_PROTO[org.status],
        trial_end=convert.timestamp(org.trial_end),
        create_time=convert.timestamp(org.created_at),
        caller_role=convert.role_to_proto(org.caller_role),
    )


def _member(member: tenancy.Member) -> tenancy_pb2.Member:
    return tenancy_pb2.Member(
        user_id=member.user_id,
        email=member.email or "",
        role=convert.role_to_proto(member.role),
        create_time=convert.timestamp(member.created_at),
    )


class TenancyServicer(tenancy_pb2_grpc.TenancyServiceServicer):
    def CreateOrganization(self, request, context: CallContext):  # noqa: N802, ANN001
        assert isinstance(context.principal, UserPrincipal)  # the access rule admits users only
        with context.unit_of_work(org_id=ids.new_id("org")) as uow:
            org = tenancy.create(
                uow=uow, context=context.audit, owner_user_id=context.principal.user_id, name=request.name
            )
        return tenancy_pb2.CreateOrganizationResponse(organization=_organization(org))

    def GetOrganization(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        org = tenancy.get(uow=context.uow, caller_role=context.grant.role)
        return tenancy_pb2.GetOrganizationResponse(organization=_organization(org))

    def ListOrganizations(self, request, context: CallContext):  # noqa: N802, ANN001
        assert isinstance(context.principal, UserPrincipal)
        with context.unit_of_work(user_id=context.principal.user_id) as uow:
            orgs, next_token = tenancy.list_for_user(uow=uow, page_size=request.page_size, page_token=request.page_token)
        return tenancy_pb2.ListOrganizationsResponse(
            organizations=[_organization(org) for org in orgs], next_page_token=next_token
        )

    def AddMember(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        member = tenancy.add_member(
            uow=context.uow,
            context=context.audit,
            actor_permissions=context.grant.permissions,
            email=request.email,
            role=convert.role_from_proto(request.role),
        )
        return tenancy_pb2.AddMemberResponse(member=_member(member))

    def UpdateMemberRole(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        member = tenancy.update_member_role(
            uow=context.uow,
            context=context.audit,
            actor_permissions=context.grant.permissions,
            user_id=request.user_id,
            role=convert.role_from_proto(request.role),
        )
        return tenancy_pb2.UpdateMemberRoleResponse(member=_member(member))

    def RemoveMember(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        tenancy.remove_member(
            uow=context.uow, context=context.audit, actor_permissions=context.grant.permissions, user_id=request.user_id
        )
        return tenancy_pb2.RemoveMemberResponse()

    def ListMembers(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        members, next_token = tenancy.list_members(
            uow=context.uow, page_size=request.page_size, page_token=request.page_token
        )
        return tenancy_pb2.ListMembersResponse(members=[_member(m) for m in members], next_page_token=next_token)

    def GetMyPermissions(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        return tenancy_pb2.GetMyPermissionsResponse(
            role=convert.role_to_proto(context.grant.role), permissions=sorted(context.grant.permissions)
        )
