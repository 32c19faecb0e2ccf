"""Every org-scoped RPC is in a role-matrix test, with the permission its contract declares.

The matrices: ORG_RPCS (tests/api/test_authorization_matrix.py: each role allowed or denied,
and the effect checked), BILLING_RPCS (tests/api/test_billing_api.py: the same for billing,
on a server without Stripe) and USAGE_RPCS (tests/api/test_usage_ingest.py: the same on the
usage server)."""

from __future__ import annotations

from fixtures_api import ORG_RPCS
from nobill.api.access import load_rules
from test_billing_api import BILLING_RPCS
from test_usage_ingest import USAGE_RPCS


def _org_scoped() -> dict[str, str]:
    """RPC name -> the permission its contract declares, for every org-scoped RPC."""
    return {
        path.rsplit("/", 1)[1]: rule.permission
        for path, rule in load_rules().items()
        if rule.kind == "org_permission"
    }


def _in_matrices() -> dict[str, str]:
    covered = {rpc.name: rpc.permission for rpc in ORG_RPCS}
    for name, (permission, _, _) in BILLING_RPCS.items():
        assert name not in covered, f"{name} is in two matrices"
        covered[name] = permission
    for name, (permission, _) in USAGE_RPCS.items():
        assert name not in covered, f"{name} is in two matrices"
        covered[name] = permission
    return covered


def test_every_org_scoped_rpc_is_in_a_role_matrix() -> None:
    missing = sorted(set(_org_scoped()) - set(_in_matrices()))
    assert missing == [], f"org-scoped RPCs no role-matrix test covers (add them to ORG_RPCS, BILLING_RPCS or USAGE_RPCS): {missing}"


def test_the_matrices_expect_the_permission_the_contract_declares() -> None:
    contract, matrices = _org_scoped(), _in_matrices()
    wrong = {name: (matrices[name], contract.get(name)) for name in matrices if matrices[name] != contract.get(name)}
    assert wrong == {}, f"matrix permission vs contract permission: {wrong}"
