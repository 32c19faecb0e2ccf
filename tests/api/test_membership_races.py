"""A removed or demoted member cannot change anything once the removal has committed:
calls that change something hold the caller's membership row (FOR SHARE) from BEGIN, so
a removal either waits for the call or the call sees the removal."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg

from fixtures_api import audit_events, create_org, join, members_by_id, unique_email
from nobill.v1 import common_pb2, tenancy_pb2
from support import new_user


def _owners(channel):
    """An org with two Owners, P and Q, each a signed-in user: (org_id, P, P's id, Q)."""
    q = new_user(channel)
    org = create_org(q)
    p, p_id = join(channel, q, org.id, common_pb2.ROLE_OWNER)
    return org.id, p, p_id, q


def _outcome(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def test_a_removal_committed_while_a_call_waits_is_seen_by_that_call(channel, database_url) -> None:
    org_id, p, p_id, q = _owners(channel)
    accomplice = unique_email("accomplice")
    with psycopg.connect(database_url) as admin:
        # Hold the org's membership-change lock so P's AddMember stops after BEGIN.
        admin.execute("SELECT set_config('nobill.org_id', %s, true)", (org_id,))
        admin.execute("SELECT 1 FROM subscriptions WHERE org_id = %s FOR UPDATE", (org_id,))
        with ThreadPoolExecutor(1) as pool:
            adding = pool.submit(
                _outcome,
                lambda: p.tenancy.AddMember(
                    tenancy_pb2.AddMemberRequest(org_id=org_id, email=accomplice, role=common_pb2.ROLE_OWNER),
                    timeout=30,
                ),
            )
            _wait_until_blocked(admin, org_id)
            # Meanwhile P is removed, by a transaction that commits while P's call waits.
            try:
                admin.execute("DELETE FROM memberships WHERE org_id = %s AND user_id = %s", (org_id, p_id))
                admin.commit()
                removed = True
            except psycopg.errors.DeadlockDetected:
                admin.rollback()
                removed = False
            code = adding.result(timeout=30)

    members = members_by_id(q, org_id)
    added = [e for e in audit_events(q, org_id, actions=["member.added"]) if e.after["email"] == accomplice]
    # Never both: a removal that committed first leaves P unable to add an Owner.
    assert not (removed and added), (removed, code, members)
    if removed:
        assert code == grpc.StatusCode.NOT_FOUND, code
        assert p_id not in members
    else:
        assert code == grpc.StatusCode.OK


def _wait_until_blocked(admin: psycopg.Connection, org_id: str, *, calls: int = 1) -> None:
    """Wait until `calls` app connections wait for a lock (parked after BEGIN)."""
    with psycopg.connect(admin.info.dsn, autocommit=True) as watcher:
        for _ in range(200):
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nobill' AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting >= calls:
                return
            time.sleep(0.02)
    raise AssertionError("the call never reached the lock")


def test_owner_removed_while_adding_an_owner_never_adds_after_the_removal(channel) -> None:
    # The attack from the report: Owner Q removes Owner P while P adds an accomplice as Owner.
    for _ in range(15):
        org_id, p, p_id, q = _owners(channel)
        start = threading.Barrier(2)

        def add():
            start.wait()
            return _outcome(
                lambda: p.tenancy.AddMember(
                    tenancy_pb2.AddMemberRequest(org_id=org_id, email=unique_email("accomplice"), role=common_pb2.ROLE_OWNER)
                )
            )

        def remove():
            start.wait()
            return _outcome(lambda: q.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=p_id)))

        with ThreadPoolExecutor(2) as pool:
            adding, removing = pool.submit(add), pool.submit(remove)
            add_code, remove_code = adding.result(timeout=30), removing.result(timeout=30)

        assert remove_code == grpc.StatusCode.OK
        assert add_code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), add_code
        events = audit_events(q, org_id)
        removed_at = next(e.sequence for e in events if e.action == "member.removed" and e.target_id == p_id)
        added_by_p = [e.sequence for e in events if e.action == "member.added" and e.actor.id == p_id]
        assert all(sequence < removed_at for sequence in added_by_p), "P changed the org after its removal"
        assert (add_code == grpc.StatusCode.OK) == bool(added_by_p)


def test_a_removed_member_can_change_nothing(channel) -> None:
    org_id, p, p_id, q = _owners(channel)
    q.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=p_id))

    code = _outcome(
        lambda: p.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org_id, email=unique_email(), role=common_pb2.ROLE_MEMBER))
    )

    assert code == grpc.StatusCode.NOT_FOUND


def test_two_owners_removing_each_other_at_once_leave_one_owner(channel) -> None:
    for _ in range(5):
        org_id, p, p_id, q = _owners(channel)
        q_id = next(user_id for user_id in members_by_id(q, org_id) if user_id != p_id)
        start = threading.Barrier(2)

        def remove(caller, target):
            start.wait()
            return _outcome(lambda: caller.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=target)))

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.submit(remove, p, q_id), pool.submit(remove, q, p_id)
            codes = sorted([first.result(timeout=30), second.result(timeout=30)], key=lambda c: c.value)

        # The deadlock on the two rows is broken by PostgreSQL; the loser runs again and
        # finds itself removed.
        assert codes == sorted([grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND], key=lambda c: c.value), codes


def test_a_deadlock_between_two_removals_is_resolved_by_running_the_loser_again(channel, database_url) -> None:
    # Both calls are held after BEGIN (each holding its own membership row) until both
    # wait: then each wants the other's row, a certain deadlock.
    org_id, p, p_id, q = _owners(channel)
    q_id = next(user_id for user_id in members_by_id(q, org_id) if user_id != p_id)
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(2) as pool:
            by_p = pool.submit(_outcome, lambda: p.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=q_id)))
            by_q = pool.submit(_outcome, lambda: q.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=p_id)))
            _wait_until_blocked(blocker, org_id, calls=2)
            blocker.rollback()
            codes = {by_p.result(timeout=30), by_q.result(timeout=30)}

    assert codes == {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}
    survivors = [e for e in audit_events(p if by_q.result() == grpc.StatusCode.NOT_FOUND else q, org_id)
                 if e.action == "member.removed"]
    assert len(survivors) == 1
