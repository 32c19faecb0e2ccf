"""Search with Stripe's query language: customers, products, prices."""

from __future__ import annotations

import pytest
import stripe

from sandbox_helpers import stripe_example_objects
from test_sandbox_object_shapes import check


def test_customers_by_metadata_email_and_name_with_pages(client):
    fixtures = stripe_example_objects()
    made = [
        client.v1.customers.create({"email": f"user{n}@Example.com", "name": f"Acme {n}", "metadata": {"org_id": "o1" if n % 2 else "o2"}})
        for n in range(5)
    ]
    found = client.v1.customers.search({"query": "metadata['org_id']:'o1'"})
    assert [c.id for c in found.data] == [made[3].id, made[1].id]
    raw = found.last_response.data
    assert set(raw) == {"object", "data", "has_more", "next_page", "url"}
    assert (raw["object"], raw["url"], raw["has_more"], raw["next_page"]) == ("search_result", "/v1/customers/search", False, None)
    check(raw["data"][0], fixtures)
    assert [c.id for c in client.v1.customers.search({"query": "email:'user2@example.com'"}).data] == [made[2].id]
    both = client.v1.customers.search({"query": "email:'user2@example.com' OR metadata['org_id']:'o1'"})
    assert {c.id for c in both.data} == {made[1].id, made[2].id, made[3].id}
    assert [c.id for c in client.v1.customers.search({"query": "name~'acme' AND -metadata['org_id']:'o2'"}).data] == [made[3].id, made[1].id]
    first = client.v1.customers.search({"query": "name~'acme'", "limit": 2})
    assert first.has_more and first.next_page
    second = client.v1.customers.search({"query": "name~'acme'", "limit": 2, "page": first.next_page})
    third = client.v1.customers.search({"query": "name~'acme'", "limit": 2, "page": second.next_page})
    assert [c.id for c in first.data + second.data + third.data] == [c.id for c in reversed(made)]
    assert not third.has_more and third.next_page is None
    # stripe-python's auto-paging follows next_page too.
    assert len(list(client.v1.customers.search({"query": "name~'acme'", "limit": 2}).auto_paging_iter())) == 5
    assert [c.id for c in client.v1.customers.search({"query": f"created>={made[4].created} AND name:'acme 4'"}).data] == [made[4].id]


def test_prices_by_lookup_key_and_active_products_by_name(client, catalog):
    found = client.v1.prices.search({"query": "lookup_key:'pro_seat' AND active:'true'"})
    assert [p.id for p in found.data] == [catalog.seat.id]
    assert {p.id for p in client.v1.prices.search({"query": f"product:'{catalog.product.id}'"}).data} == {catalog.base.id, catalog.seat.id, catalog.usage.id}
    client.v1.prices.update(catalog.seat.id, {"active": False})
    assert client.v1.prices.search({"query": "lookup_key:'pro_seat' AND active:'true'"}).data == []
    assert [p.id for p in client.v1.products.search({"query": "name:'pro' AND active:'true'"}).data] == [catalog.product.id]
    assert client.v1.products.search({"query": "metadata['tier']:null"}).data[0].id == catalog.product.id


@pytest.mark.parametrize(
    "query",
    ["", "email", "email:'a' AND name:'b' OR name:'c'", "colour:'red'", "name>3", "name~'ab'", "email:'a' email:'b'", "metadata:'x'"],
)
def test_malformed_queries_are_refused_with_a_reason(client, query):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.search({"query": query})
    assert caught.value.param == "query" and caught.value.http_status == 400
