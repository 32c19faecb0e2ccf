"""Products and Prices (per-unit: flat or per-seat licensed, and metered with a meter)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from nobill.sandbox import errors, events, ids, objects
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import (
    CREATED_FILTER,
    Array,
    Bool,
    DecimalString,
    Enum,
    Hash,
    Int,
    Metadata,
    Str,
    endpoint,
    in_range,
    list_endpoint,
    merge_metadata,
    or_none,
)
from nobill.sandbox.records import PriceRecord, ProductRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

_CURRENCY = re.compile(r"^[a-z]{3}$")
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9_-]{1,250}$")
# Stripe caps a recurring interval at one year.
MAX_INTERVAL_COUNT = {"day": 365, "week": 52, "month": 12, "year": 1}
INTERVALS = ("day", "month", "week", "year")
TAX_BEHAVIORS = ("exclusive", "inclusive", "unspecified")

# -- products -------------------------------------------------------------------------

MARKETING_FEATURES = Array(Hash({"name": Str(max_length=80)}, required=("name",)), max_items=15)
DEFAULT_PRICE_DATA = Hash(
    {
        "currency": Str(),
        "metadata": Metadata(),
        "recurring": Hash(
            {"interval": Enum(*INTERVALS), "interval_count": Int(minimum=1)}, required=("interval",)
        ),
        "tax_behavior": Enum(*TAX_BEHAVIORS),
        "unit_amount": Int(minimum=0),
        "unit_amount_decimal": DecimalString(),
    },
    required=("currency",),
    not_simulated=("currency_options", "custom_unit_amount"),
)
PRODUCT_CREATE = endpoint(
    {
        "active": Bool(),
        "default_price_data": DEFAULT_PRICE_DATA,
        "description": Str(max_length=40_000),
        "id": Str(),
        "images": Array(Str(max_length=2048), max_items=8),
        "marketing_features": MARKETING_FEATURES,
        "metadata": Metadata(),
        "name": Str(max_length=5000),
        "shippable": Bool(),
        "statement_descriptor": Str(max_length=22),
        "tax_code": Str(),
        "unit_label": Str(max_length=12),
        "url": Str(max_length=5000),
    },
    required=("name",),
    not_simulated=("package_dimensions", "tax_details"),
)
PRODUCT_UPDATE = endpoint(
    {
        "active": Bool(),
        "default_price": Str(),
        "description": Str(max_length=40_000, emptyable=True),
        "images": Array(Str(max_length=2048), max_items=8, emptyable=True),
        "marketing_features": Array(Hash({"name": Str(max_length=80)}, required=("name",)), max_items=15, emptyable=True),
        "metadata": Metadata(),
        "name": Str(max_length=5000),
        "shippable": Bool(),
        "statement_descriptor": Str(max_length=22),
        "tax_code": Str(emptyable=True),
        "unit_label": Str(max_length=12, emptyable=True),
        "url": Str(max_length=5000, emptyable=True),
    },
    not_simulated=("package_dimensions", "tax_details"),
)


def _apply_product_fields(product: ProductRecord, params: dict[str, Any]) -> None:
    for name in ("active", "name", "shippable", "statement_descriptor"):
        if name in params:
            setattr(product, name, params[name])
    for name in ("description", "tax_code", "unit_label", "url"):
        if name in params:
            setattr(product, name, or_none(params[name]))
    if "images" in params:
        product.images = list(params["images"] or [])
    if "marketing_features" in params:
        product.marketing_features = [dict(f) for f in params["marketing_features"] or []]
    if "metadata" in params:
        product.metadata = merge_metadata(product.metadata, params["metadata"])


@route("POST", "/v1/products", PRODUCT_CREATE)
def create_product(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    product_id = params.get("id") or ids.new_id("prod")
    if not _PRODUCT_ID.match(product_id):
        raise errors.invalid_request("Invalid id: may contain only letters, numbers, `_` and `-`.", param="id")
    if product_id in state.products:
        raise errors.invalid_request(
            "Product already exists.", param="id", code="resource_already_exists"
        )
    now = state.real_now()
    product = ProductRecord(id=product_id, created=now, updated=now, name=params["name"])
    _apply_product_fields(product, params)
    default_price = None
    if "default_price_data" in params:
        data = params["default_price_data"]
        default_price = _build_price(
            state,
            {
                "currency": data["currency"],
                "unit_amount": data.get("unit_amount"),
                "unit_amount_decimal": data.get("unit_amount_decimal"),
                "recurring": data.get("recurring"),
                "metadata": data.get("metadata"),
                "tax_behavior": data.get("tax_behavior"),
            },
            product_id=product.id,
            now=now,
            param_prefix="default_price_data",
        )
        product.default_price = default_price.id
    state.products[product.id] = product
    rendered = objects.product(state, product)
    events.emit(state, "product.created", rendered, created=now)
    if default_price is not None:
        _store_price(state, default_price)
    state.dirty = True
    return rendered


@route("GET", "/v1/products/{id}", endpoint({}))
def retrieve_product(call: Call) -> dict[str, Any]:
    return objects.product(call.state, call.state.get_product(call.path_args["id"], status=404, param="id"))


@route("POST", "/v1/products/{id}", PRODUCT_UPDATE)
def update_product(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    product = state.get_product(call.path_args["id"], status=404, param="id")
    before = objects.product(state, product)
    if "default_price" in params:
        price = state.get_price(params["default_price"], param="default_price")
        if price.product != product.id:
            raise errors.invalid_request(
                f"The price `{price.id}` does not belong to this product.", param="default_price"
            )
        product.default_price = price.id
    _apply_product_fields(product, params)
    after = objects.product(state, product)
    if after != before:
        product.updated = state.real_now()
        after = objects.product(state, product)
    state.dirty = True
    events.emit_updated(state, "product.updated", before, after, created=product.updated)
    return after


@route("DELETE", "/v1/products/{id}", endpoint({}, expand=False))
def delete_product(call: Call) -> dict[str, Any]:
    state = call.state
    product = state.get_product(call.path_args["id"], status=404, param="id")
    if any(price.product == product.id for price in state.prices.values()):
        raise errors.invalid_request("This product cannot be deleted because it has one or more user-created prices.")
    rendered = objects.product(state, product)
    product.deleted = True
    state.dirty = True
    events.emit(state, "product.deleted", rendered, created=state.real_now())
    return objects.deleted(product.id, "product")


@route(
    "GET",
    "/v1/products",
    list_endpoint(
        {
            "active": Bool(),
            "created": CREATED_FILTER,
            "ids": Array(Str()),
            "shippable": Bool(),
            "type": Enum("good", "service"),
            "url": Str(),
        }
    ),
)
def list_products(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params

    def keep(product: ProductRecord) -> bool:
        return (
            not product.deleted
            and ("active" not in params or product.active == params["active"])
            and ("ids" not in params or product.id in params["ids"])
            and ("shippable" not in params or product.shippable == params["shippable"])
            and ("url" not in params or product.url == params["url"])
            # Products created through the API today are all of type `service`.
            and params.get("type", "service") == "service"
            and in_range(product.created, params.get("created"))
        )

    return paginate(
        newest_first(state.products, keep),
        params,
        url="/v1/products",
        render=lambda product: objects.product(state, product),
        collection=state.products,
        resource="product",
    )


# -- prices ---------------------------------------------------------------------------

PRICE_CREATE = endpoint(
    {
        "active": Bool(),
        "billing_scheme": Enum("per_unit", "tiered"),
        "currency": Str(),
        "lookup_key": Str(max_length=200),
        "metadata": Metadata(),
        "nickname": Str(),
        "product": Str(),
        "product_data": Hash(
            {
                "active": Bool(),
                "id": Str(),
                "metadata": Metadata(),
                "name": Str(max_length=5000),
                "statement_descriptor": Str(max_length=22),
                "tax_code": Str(),
                "unit_label": Str(max_length=12),
            },
            required=("name",),
            not_simulated=("tax_details",),
        ),
        "recurring": Hash(
            {
                "interval": Enum(*INTERVALS),
                "interval_count": Int(minimum=1),
                "meter": Str(),
                "trial_period_days": Int(minimum=0, maximum=730),
                "usage_type": Enum("licensed", "metered"),
            },
            required=("interval",),
        ),
        "tax_behavior": Enum(*TAX_BEHAVIORS),
        "transfer_lookup_key": Bool(),
        "unit_amount": Int(minimum=0),
        "unit_amount_decimal": DecimalString(),
    },
    required=("currency",),
    not_simulated=("currency_options", "custom_unit_amount", "tiers", "tiers_mode", "transform_quantity"),
)
PRICE_UPDATE = endpoint(
    {
        "active": Bool(),
        "lookup_key": Str(max_length=200),
        "metadata": Metadata(),
        "nickname": Str(emptyable=True),
        "tax_behavior": Enum(*TAX_BEHAVIORS),
        "transfer_lookup_key": Bool(),
    },
    not_simulated=("currency_options",),
)


def _build_price(state: SandboxState, params: dict[str, Any], *, product_id: str, now: int, param_prefix: str = "") -> PriceRecord:
    """A validated, not yet stored price."""

    def name(param: str) -> str:
        return f"{param_prefix}[{param}]" if param_prefix else param

    currency = params["currency"].lower()
    if not _CURRENCY.match(currency):
        raise errors.invalid_request(f"Invalid currency: {params['currency']}.", param=name("currency"))
    if params.get("billing_scheme") == "tiered":
        raise errors.not_simulated(name("billing_scheme"))
    has_amount, has_decimal = params.get("unit_amount") is not None, params.get("unit_amount_decimal") is not None
    if has_amount and has_decimal:
        raise errors.invalid_request(
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.", param=name("unit_amount")
        )
    if not has_amount and not has_decimal:
        raise errors.missing_parameter(name("unit_amount"))
    amount = Decimal(params["unit_amount"]) if has_amount else params["unit_amount_decimal"]
    price = PriceRecord(
        id=ids.new_id("price"),
        created=now,
        product=product_id,
        currency=currency,
        unit_amount_decimal=objects.format_decimal(amount),
        type="one_time",
        metadata=merge_metadata({}, params["metadata"]) if params.get("metadata") else {},
        nickname=or_none(params.get("nickname")),
        tax_behavior=params.get("tax_behavior") or "unspecified",
        active=params.get("active", True),
    )
    recurring = params.get("recurring")
    if recurring:
        interval = recurring["interval"]
        count = recurring.get("interval_count", 1)
        if count > MAX_INTERVAL_COUNT[interval]:
            raise errors.invalid_request(
                f"Invalid {name('recurring')}[interval_count]: recurring interval can be at most one year "
                "(1 year, 12 months, 52 weeks, or 365 days).",
                param=f"{name('recurring')}[interval_count]",
            )
        usage_type = recurring.get("usage_type", "licensed")
        meter = recurring.get("meter")
        if usage_type == "metered" and meter is None:
            raise errors.invalid_request(
                "Metered prices must be backed by a meter: set `recurring[meter]` (usage records were removed "
                "in API version 2025-03-31.basil).",
                param=f"{name('recurring')}[meter]",
            )
        if meter is not None:
            if usage_type != "metered":
                raise errors.invalid_request(
                    "`recurring[meter]` can only be set when `recurring[usage_type]` is `metered`.",
                    param=f"{name('recurring')}[meter]",
                )
            state.get_meter(meter, param=f"{name('recurring')}[meter]")
        price.type = "recurring"
        price.interval = interval
        price.interval_count = count
        price.usage_type = usage_type
        price.meter = meter
        price.trial_period_days = recurring.get("trial_period_days")
    return price


def _claim_lookup_key(state: SandboxState, price: PriceRecord, lookup_key: str, transfer: bool) -> None:
    holder = next((p for p in state.prices.values() if p.lookup_key == lookup_key and p.id != price.id), None)
    if holder is not None:
        if not transfer:
            raise errors.invalid_request(
                f"A price (`{holder.id}`) already uses that lookup key.", param="lookup_key"
            )
        holder.lookup_key = None
    price.lookup_key = lookup_key


def _store_price(state: SandboxState, price: PriceRecord) -> dict[str, Any]:
    state.prices[price.id] = price
    state.dirty = True
    rendered = objects.price(state, price)
    events.emit(state, "price.created", rendered, created=price.created)
    return rendered


@route("POST", "/v1/prices", PRICE_CREATE)
def create_price(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    has_product, has_data = "product" in params, "product_data" in params
    if has_product == has_data:
        raise errors.invalid_request(
            "You must specify either `product` or `product_data` when creating a price.", param="product"
        )
    now = state.real_now()
    if has_product:
        product = state.get_product(params["product"], param="product")
        price = _build_price(state, params, product_id=product.id, now=now)
    else:
        data = params["product_data"]
        product_id = data.get("id") or ids.new_id("prod")
        if product_id in state.products:
            raise errors.invalid_request("Product already exists.", param="product_data[id]", code="resource_already_exists")
        price = _build_price(state, params, product_id=product_id, now=now)
    # Checked before anything is stored, so a taken lookup key changes nothing.
    if "lookup_key" in params:
        _claim_lookup_key(state, price, params["lookup_key"], params.get("transfer_lookup_key", False))
    if has_data:
        product = ProductRecord(id=price.product, created=now, updated=now, name=params["product_data"]["name"])
        _apply_product_fields(product, params["product_data"])
        state.products[product.id] = product
        events.emit(state, "product.created", objects.product(state, product), created=now)
    return _store_price(state, price)


@route("GET", "/v1/prices/{price}", endpoint({}))
def retrieve_price(call: Call) -> dict[str, Any]:
    return objects.price(call.state, call.state.get_price(call.path_args["price"], status=404, param="id"))


@route("POST", "/v1/prices/{price}", PRICE_UPDATE)
def update_price(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    price = state.get_price(call.path_args["price"], status=404, param="id")
    before = objects.price(state, price)
    if "tax_behavior" in params and price.tax_behavior != "unspecified" and params["tax_behavior"] != price.tax_behavior:
        raise errors.invalid_request(
            "Tax behavior cannot be changed once it is set to `inclusive` or `exclusive`.", param="tax_behavior"
        )
    if "lookup_key" in params:
        _claim_lookup_key(state, price, params["lookup_key"], params.get("transfer_lookup_key", False))
    if "active" in params:
        price.active = params["active"]
    if "nickname" in params:
        price.nickname = or_none(params["nickname"])
    if "metadata" in params:
        price.metadata = merge_metadata(price.metadata, params["metadata"])
    if "tax_behavior" in params:
        price.tax_behavior = params["tax_behavior"]
    state.dirty = True
    after = objects.price(state, price)
    events.emit_updated(state, "price.updated", before, after, created=state.real_now())
    return after


@route(
    "GET",
    "/v1/prices",
    list_endpoint(
        {
            "active": Bool(),
            "created": CREATED_FILTER,
            "currency": Str(),
            "lookup_keys": Array(Str(), max_items=10),
            "product": Str(),
            "recurring": Hash(
                {"interval": Enum(*INTERVALS), "meter": Str(), "usage_type": Enum("licensed", "metered")}
            ),
            "type": Enum("one_time", "recurring"),
        }
    ),
)
def list_prices(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    recurring = params.get("recurring", {})

    def keep(price: PriceRecord) -> bool:
        return (
            ("active" not in params or price.active == params["active"])
            and ("currency" not in params or price.currency == params["currency"].lower())
            and ("lookup_keys" not in params or price.lookup_key in params["lookup_keys"])
            and ("product" not in params or price.product == params["product"])
            and ("type" not in params or price.type == params["type"])
            and all(getattr(price, {"interval": "interval", "meter": "meter", "usage_type": "usage_type"}[k]) == v for k, v in recurring.items())
            and in_range(price.created, params.get("created"))
        )

    return paginate(
        newest_first(state.prices, keep),
        params,
        url="/v1/prices",
        render=lambda price: objects.price(state, price),
        collection=state.prices,
        resource="price",
    )
