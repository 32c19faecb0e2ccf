"""AuditService over the real server: what every mutation records, ordering, filters,
paging, chain verification, request ids and tenant isolation."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from fixtures_api import (
    add_member,
    audit_events,
    create_org,
    failure,
    pages,
    retarget_page_token,
    unique_email,
)
from nobill.v1 import audit_pb2, common_pb2, tenancy_pb2, tenancy_pb2_grpc
from support import bearer, new_user


def _request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def _list(client, org_id: str, **fields):
    return client.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(org_id=org_id, **fields))


def _trailing(call: grpc.Call) -> dict[str, str]:
    return dict(call.trailing_metadata() or ())


def _user_id(owner, org_id: str) -> str:
    members = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org_id)).members
    return next(member.user_id for member in members if member.email == owner.email)


@pytest.fixture
def busy_org(channel):
    """An org with 5 events: created, trial started, member added, role changed, member removed."""
    owner = new_user(channel)
    org = create_org(owner, "Busy Org")
    member = add_member(owner, org.id, common_pb2.ROLE_MEMBER)
    owner.tenancy.UpdateMemberRole(
        tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=member.user_id, role=common_pb2.ROLE_ADMIN)
    )
    owner.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org.id, user_id=member.user_id))
    return owner, org.id, member


# --- what mutations record ------------------------------------------------------------


def test_creating_an_org_records_who_what_and_the_request_id(channel) -> None:
    owner = new_user(channel)
    stub = tenancy_pb2_grpc.TenancyServiceStub(channel)
    request_id = _request_id()

    response, call = stub.CreateOrganization.with_call(
        tenancy_pb2.CreateOrganizationRequest(name="Audited Co"),
        metadata=bearer(owner.token) + (("x-request-id", request_id),),
        timeout=15,
    )

    org_id = response.organization.id
    assert _trailing(call).get("x-request-id") == request_id
    events = audit_events(owner, org_id)
    assert [event.action for event in events] == ["organization.created", "subscription.trial_started"]
    created = events[0]
    owner_id = _user_id(owner, org_id)
    assert created.org_id == org_id
    assert created.sequence == 1
    assert (created.actor.type, created.actor.id, created.actor.display_name) == (
        common_pb2.ACTOR_TYPE_USER, owner_id, owner.email,
    )
    assert (created.target_type, created.target_id) == ("organization", org_id)
    assert dict(created.after) == {"name": "Audited Co", "owner_user_id": owner_id}
    assert not created.HasField("before")
    assert created.request_id == request_id
    assert created.HasField("create_time")
    assert abs(created.create_time.ToMicroseconds() - response.organization.create_time.ToMicroseconds()) < 5_000_000
    assert {event.request_id for event in events} == {request_id}


def test_member_changes_record_before_and_after(busy_org) -> None:
    owner, org_id, member = busy_org

    added, changed, removed = audit_events(owner, org_id)[2:]

    assert (added.action, added.target_type, added.target_id) == ("member.added", "member", member.user_id)
    assert not added.HasField("before")
    assert dict(added.after) == {"email": member.email, "role": "member"}

    assert (changed.action, changed.target_type, changed.target_id) == ("member.role_changed", "member", member.user_id)
    assert dict(changed.before) == {"role": "member"}
    assert dict(changed.after) == {"role": "admin"}

    assert (removed.action, removed.target_type, removed.target_id) == ("member.removed", "member", member.user_id)
    assert dict(removed.before) == {"email": member.email, "role": "admin"}
    assert not removed.HasField("after")

    owner_id = _user_id(owner, org_id)
    for event in (added, changed, removed):
        assert (event.actor.type, event.actor.id, event.actor.display_name) == (
            common_pb2.ACTOR_TYPE_USER, owner_id, owner.email,
        )
        assert event.request_id


@pytest.mark.parametrize("mutation", ["add", "update", "remove"])
def test_each_mutation_records_the_request_id_it_was_sent_with(channel, mutation: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    member = add_member(owner, org.id, common_pb2.ROLE_MEMBER)
    request_id = _request_id()
    metadata = (("x-request-id", request_id),)

    if mutation == "add":
        owner.tenancy.AddMember(
            tenancy_pb2.AddMemberRequest(org_id=org.id, email=unique_email(), role=common_pb2.ROLE_MEMBER),
            metadata=metadata,
        )
    elif mutation == "update":
        owner.tenancy.UpdateMemberRole(
            tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=member.user_id, role=common_pb2.ROLE_ADMIN),
            metadata=metadata,
        )
    else:
        owner.tenancy.RemoveMember(
            tenancy_pb2.RemoveMemberRequest(org_id=org.id, user_id=member.user_id), metadata=metadata
        )

    latest = _list(owner, org.id, page_size=1).events[0]
    assert latest.request_id == request_id
    actions = {"add": "member.added", "update": "member.role_changed", "remove": "member.removed"}
    assert latest.action == actions[mutation]


def test_a_request_without_an_id_gets_one_that_is_echoed_and_recorded(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    stub = tenancy_pb2_grpc.TenancyServiceStub(channel)

    _, call = stub.AddMember.with_call(
        tenancy_pb2.AddMemberRequest(org_id=org.id, email=unique_email(), role=common_pb2.ROLE_MEMBER),
        metadata=bearer(owner.token),
        timeout=15,
    )

    echoed = _trailing(call).get("x-request-id")
    assert echoed
    assert _list(owner, org.id, page_size=1).events[0].request_id == echoed


def test_an_unsafe_request_id_is_replaced_not_recorded(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    stub = tenancy_pb2_grpc.TenancyServiceStub(channel)
    unsafe = "id with spaces; and <html>"

    _, call = stub.AddMember.with_call(
        tenancy_pb2.AddMemberRequest(org_id=org.id, email=unique_email(), role=common_pb2.ROLE_MEMBER),
        metadata=bearer(owner.token) + (("x-request-id", unsafe),),
        timeout=15,
    )

    echoed = _trailing(call).get("x-request-id")
    assert echoed and echoed != unsafe
    assert _list(owner, org.id, page_size=1).events[0].request_id == echoed


def test_a_failed_call_still_echoes_its_request_id(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    request_id = _request_id()

    error = failure(
        lambda: owner.tenancy.AddMember(
            tenancy_pb2.AddMemberRequest(org_id=org.id, email="not-an-email", role=common_pb2.ROLE_MEMBER),
            metadata=(("x-request-id", request_id),),
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata() or ()).get("x-request-id") == request_id


def test_a_refused_change_records_nothing(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    member = add_member(owner, org.id, common_pb2.ROLE_MEMBER)
    before = audit_events(owner, org.id)

    duplicate = tenancy_pb2.AddMemberRequest(org_id=org.id, email=member.email, role=common_pb2.ROLE_ADMIN)
    last_owner = tenancy_pb2.RemoveMemberRequest(org_id=org.id, user_id=_user_id(owner, org.id))

    assert failure(lambda: owner.tenancy.AddMember(duplicate)).code() == grpc.StatusCode.ALREADY_EXISTS
    assert failure(lambda: owner.tenancy.RemoveMember(last_owner)).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert audit_events(owner, org.id) == before


# --- order, sequence, chain -----------------------------------------------------------


def test_sequences_are_gapless_and_hash_chained(busy_org) -> None:
    owner, org_id, _ = busy_org

    events = audit_events(owner, org_id)

    assert [event.sequence for event in events] == [1, 2, 3, 4, 5]
    assert events[0].previous_hash == "0" * 64
    for earlier, later in zip(events, events[1:]):
        assert later.previous_hash == earlier.hash
    assert len({event.hash for event in events}) == 5
    assert all(len(event.hash) == 64 for event in events)


def test_events_are_newest_first_by_default_and_oldest_first_on_request(busy_org) -> None:
    owner, org_id, _ = busy_org

    newest_first = [event.sequence for event in _list(owner, org_id).events]
    oldest_first = [event.sequence for event in _list(owner, org_id, oldest_first=True).events]

    assert newest_first == [5, 4, 3, 2, 1]
    assert oldest_first == [1, 2, 3, 4, 5]
    assert _list(owner, org_id).events[0].action == "member.removed"


def test_verify_audit_chain_checks_every_event(busy_org) -> None:
    owner, org_id, _ = busy_org

    report = owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=org_id))

    assert report.valid is True
    assert report.events_checked == 5 == len(audit_events(owner, org_id))
    assert report.first_broken_sequence == 0
    assert report.reason == ""


def test_verify_audit_chain_counts_new_events(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    assert owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=org.id)).events_checked == 2

    add_member(owner, org.id, common_pb2.ROLE_MEMBER)

    report = owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=org.id))
    assert (report.valid, report.events_checked) == (True, 3)


# --- filters --------------------------------------------------------------------------


def test_filter_by_actions(busy_org) -> None:
    owner, org_id, _ = busy_org

    one = _list(owner, org_id, actions=["member.role_changed"]).events
    two = _list(owner, org_id, actions=["member.added", "member.removed"], oldest_first=True).events
    none = _list(owner, org_id, actions=["no.such.action"]).events

    assert [(event.action, event.sequence) for event in one] == [("member.role_changed", 4)]
    assert [event.action for event in two] == ["member.added", "member.removed"]
    assert list(none) == []


def test_filter_by_time_range_is_start_inclusive_end_exclusive(busy_org) -> None:
    owner, org_id, _ = busy_org
    events = audit_events(owner, org_id)
    times = [event.create_time for event in events]
    assert len({time.ToMicroseconds() for time in times}) == 5, "events need distinct times for this test"

    window = _list(owner, org_id, start_time=times[1], end_time=times[3], oldest_first=True).events
    from_start = _list(owner, org_id, start_time=times[3], oldest_first=True).events
    until_end = _list(owner, org_id, end_time=times[1], oldest_first=True).events

    assert [event.sequence for event in window] == [2, 3]
    assert [event.sequence for event in from_start] == [4, 5]
    assert [event.sequence for event in until_end] == [1]


@pytest.mark.parametrize("gap_seconds", [0, -1])
def test_a_time_range_that_does_not_start_before_it_ends_is_invalid(busy_org, gap_seconds: int) -> None:
    owner, org_id, _ = busy_org
    start = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    end = timestamp_pb2.Timestamp(seconds=1_800_000_000 + gap_seconds)

    error = failure(lambda: _list(owner, org_id, start_time=start, end_time=end))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"start_time": timestamp_pb2.Timestamp(seconds=1, nanos=-1)}, id="negative-nanos"),
        pytest.param({"end_time": timestamp_pb2.Timestamp(seconds=1, nanos=1_000_000_000)}, id="nanos-overflow"),
        pytest.param({"start_time": timestamp_pb2.Timestamp(seconds=2**62)}, id="far-future"),
        pytest.param({"end_time": timestamp_pb2.Timestamp(seconds=-(2**62))}, id="far-past"),
        pytest.param({"actions": [""]}, id="empty-action"),
        pytest.param({"actions": ["a" * 101]}, id="oversized-action"),
        pytest.param({"actions": ["member.added", "x" * 100_000]}, id="one-huge-action"),
        pytest.param({"actions": ["member\x00added"]}, id="nul-in-action"),
        pytest.param({"page_size": -1}, id="negative-page-size"),
        pytest.param({"page_token": "garbage"}, id="garbage-token"),
        pytest.param({"page_token": "W1td"}, id="json-list-token"),
        pytest.param({"page_token": "x" * 5000}, id="oversized-token"),
    ],
)
def test_list_audit_events_rejects_bad_input(busy_org, fields: dict) -> None:
    owner, org_id, _ = busy_org

    error = failure(lambda: _list(owner, org_id, **fields))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


# --- paging ---------------------------------------------------------------------------


@pytest.mark.parametrize("oldest_first", [False, True])
def test_paging_through_events_has_no_duplicates_or_gaps(busy_org, oldest_first: bool) -> None:
    owner, org_id, _ = busy_org

    seen = pages(
        lambda token: _list(owner, org_id, page_size=2, page_token=token, oldest_first=oldest_first), "events"
    )

    assert [len(page) for page in seen] == [2, 2, 1]
    sequences = [event.sequence for page in seen for event in page]
    assert sequences == ([1, 2, 3, 4, 5] if oldest_first else [5, 4, 3, 2, 1])


def test_paging_with_a_filter_keeps_the_filter(busy_org) -> None:
    owner, org_id, _ = busy_org
    member_actions = ["member.added", "member.role_changed", "member.removed"]

    seen = pages(
        lambda token: _list(owner, org_id, page_size=2, page_token=token, actions=member_actions), "events"
    )

    assert [[event.sequence for event in page] for page in seen] == [[5, 4], [3]]


def _first_page_token(owner, org_id: str, **fields) -> str:
    token = _list(owner, org_id, page_size=2, **fields).next_page_token
    assert token
    return token


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"oldest_first": True}, id="order"),
        pytest.param({"actions": ["member.added"]}, id="actions"),
        pytest.param({"start_time": timestamp_pb2.Timestamp(seconds=1)}, id="start-time"),
        pytest.param({"end_time": timestamp_pb2.Timestamp(seconds=4_000_000_000)}, id="end-time"),
    ],
)
def test_a_page_token_from_another_query_is_invalid_argument(busy_org, changed: dict) -> None:
    owner, org_id, _ = busy_org
    token = _first_page_token(owner, org_id)

    error = failure(lambda: _list(owner, org_id, page_token=token, **changed))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_page_token_from_another_org_is_invalid_argument(busy_org) -> None:
    owner, org_id, _ = busy_org
    other = create_org(owner)
    token = _first_page_token(owner, org_id)

    error = failure(lambda: _list(owner, other.id, page_token=token))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_members_page_token_is_invalid_for_audit_events(busy_org) -> None:
    owner, org_id, _ = busy_org
    for _ in range(2):
        add_member(owner, org_id, common_pb2.ROLE_MEMBER)
    token = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org_id, page_size=1)).next_page_token

    error = failure(lambda: _list(owner, org_id, page_token=token))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "position",
    [
        pytest.param("3", id="string"),
        pytest.param(2.5, id="fraction"),
        pytest.param({"sequence": 3}, id="object"),
        pytest.param(2**70, id="beyond-bigint"),
    ],
)
def test_a_tampered_audit_page_token_is_invalid_argument_not_internal(busy_org, position) -> None:
    owner, org_id, _ = busy_org
    token = retarget_page_token(_first_page_token(owner, org_id), position)

    error = failure(lambda: _list(owner, org_id, page_token=token))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


# --- tenant isolation -----------------------------------------------------------------


def test_an_orgs_audit_never_shows_another_orgs_events(channel) -> None:
    owner = new_user(channel)
    first, second = create_org(owner, "First"), create_org(owner, "Second")
    in_first = add_member(owner, first.id, common_pb2.ROLE_MEMBER)
    in_second = add_member(owner, second.id, common_pb2.ROLE_MEMBER)
    add_member(owner, second.id, common_pb2.ROLE_MEMBER)

    first_events = audit_events(owner, first.id)
    second_events = audit_events(owner, second.id)

    assert {event.org_id for event in first_events} == {first.id}
    assert {event.org_id for event in second_events} == {second.id}
    assert [event.sequence for event in first_events] == [1, 2, 3]
    assert [event.sequence for event in second_events] == [1, 2, 3, 4]
    assert in_second.user_id not in {event.target_id for event in first_events}
    assert second.id not in {event.target_id for event in first_events}
    assert in_first.user_id not in {event.target_id for event in second_events}
    report = owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=first.id))
    assert (report.valid, report.events_checked) == (True, 3)


def test_an_admin_of_one_org_cannot_read_anothers_audit(channel) -> None:
    owner = new_user(channel)
    mine = create_org(owner)
    other_owner = new_user(channel)
    theirs = create_org(other_owner)

    listing = failure(lambda: _list(owner, theirs.id))
    verify = failure(lambda: owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=theirs.id)))

    assert listing.code() == verify.code() == grpc.StatusCode.NOT_FOUND
    assert {event.org_id for event in audit_events(owner, mine.id)} == {mine.id}


def test_too_many_action_filters_are_invalid_argument(channel) -> None:
    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Filters")).organization
    request = audit_pb2.ListAuditEventsRequest(org_id=org.id, actions=[f"a{i}" for i in range(51)])
    with pytest.raises(grpc.RpcError) as caught:
        owner.audit.ListAuditEvents(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
