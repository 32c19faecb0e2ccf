"""Declarative parameter schemas: what each endpoint accepts, checked the way Stripe checks.

A schema is a tree of specs (`Hash`, `Array`, `Str`, `Int`, ...). `Hash.parse` turns the
decoded form tree into typed Python values and raises Stripe's errors with the parameter
named in bracket notation: unknown parameters (`parameter_unknown`), missing required
ones (`parameter_missing`), bad integers, bad enum values, empty strings where a value
cannot be unset. An empty string where Stripe allows unsetting becomes `UNSET`.

`tests/sandbox/test_param_schemas.py` checks every name declared here against
stripe-python's typed parameter classes, so the sandbox only accepts real parameters.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

from nobill.sandbox import errors
from nobill.sandbox.wire_form import render_key


class _Unset:
    """An empty string sent to clear a field (Stripe's way of unsetting)."""

    _instance: "_Unset | None" = None

    def __new__(cls) -> "_Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET = _Unset()


class Spec:
    emptyable = False

    def parse(self, value: Any, path: list[str]) -> Any:
        raise NotImplementedError

    def _empty(self, path: list[str]) -> Any:
        if self.emptyable:
            return UNSET
        raise errors.empty_string(render_key(path))


def _scalar(value: Any, path: list[str]) -> str:
    if not isinstance(value, str):
        raise errors.invalid_request(f"Invalid string: {_describe(value)}", param=render_key(path))
    return value


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: ..." for k in value) + "}"
    return str(value)


class Str(Spec):
    def __init__(self, *, max_length: int = 5000, choices: Iterable[str] | None = None, emptyable: bool = False) -> None:
        self.max_length = max_length
        self.choices = tuple(choices) if choices is not None else None
        self.emptyable = emptyable

    def parse(self, value: Any, path: list[str]) -> Any:
        text = _scalar(value, path)
        if text == "":
            return self._empty(path)
        if self.choices is not None and text not in self.choices:
            raise errors.invalid_choice(render_key(path), self.choices)
        if len(text) > self.max_length:
            raise errors.invalid_request(
                f"Invalid {render_key(path)}: must be at most {self.max_length} characters", param=render_key(path)
            )
        return text


def Enum(*choices: str, emptyable: bool = False) -> Str:  # noqa: N802 - reads like a type in schemas
    return Str(choices=choices, emptyable=emptyable)


class Int(Spec):
    def __init__(self, *, minimum: int | None = None, maximum: int | None = None, emptyable: bool = False) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.emptyable = emptyable

    def parse(self, value: Any, path: list[str]) -> Any:
        text = _scalar(value, path)
        if text == "":
            return self._empty(path)
        try:
            number = int(text, 10)
        except ValueError:
            raise errors.invalid_integer(render_key(path), text) from None
        name = render_key(path)
        if self.minimum is not None and number < self.minimum:
            raise errors.invalid_request(
                f"Invalid {name}: must be greater than or equal to {self.minimum}", param=name
            )
        if self.maximum is not None and number > self.maximum:
            raise errors.invalid_request(f"Invalid {name}: must be less than or equal to {self.maximum}", param=name)
        return number


class IntOr(Spec):
    """An integer or one of a few words, e.g. `trial_end=now` or `cancel_at=min_period_end`."""

    def __init__(self, *words: str, minimum: int | None = None, emptyable: bool = False) -> None:
        self.words = words
        self.integer = Int(minimum=minimum)
        self.emptyable = emptyable

    def parse(self, value: Any, path: list[str]) -> Any:
        text = _scalar(value, path)
        if text == "":
            return self._empty(path)
        if text in self.words:
            return text
        try:
            return self.integer.parse(text, path)
        except errors.StripeError:
            raise errors.invalid_request(
                f"Invalid {render_key(path)}: must be an integer Unix timestamp or one of "
                + ", ".join(self.words),
                param=render_key(path),
            ) from None


class DecimalString(Spec):
    def __init__(self, *, minimum: Decimal | None = Decimal(0)) -> None:
        self.minimum = minimum

    def parse(self, value: Any, path: list[str]) -> Any:
        text = _scalar(value, path)
        if text == "":
            return self._empty(path)
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise errors.invalid_request(f"Invalid decimal: {text}", param=render_key(path)) from None
        if not number.is_finite() or (self.minimum is not None and number < self.minimum):
            raise errors.invalid_request(f"Invalid decimal: {text}", param=render_key(path))
        return number


class Bool(Spec):
    def parse(self, value: Any, path: list[str]) -> Any:
        text = _scalar(value, path)
        if text == "true":
            return True
        if text == "false":
            return False
        raise errors.invalid_request(f"Invalid boolean: {text}", param=render_key(path))


class Metadata(Spec):
    """`metadata[key]=value`; `metadata=` clears all keys, `metadata[key]=` clears one."""

    emptyable = True

    def parse(self, value: Any, path: list[str]) -> Any:
        if value == "":
            return UNSET
        if not isinstance(value, dict):
            raise errors.invalid_request("Invalid object", param=render_key(path))
        if len(value) > 50:
            raise errors.invalid_request(
                "Invalid metadata: metadata can have at most 50 keys", param=render_key(path)
            )
        parsed: dict[str, Any] = {}
        for key, item in value.items():
            item_path = path + [key]
            if not isinstance(item, str):
                raise errors.invalid_request(f"Invalid string: {_describe(item)}", param=render_key(item_path))
            if len(key) > 40:
                raise errors.invalid_request(
                    "Metadata keys can be at most 40 characters long", param=render_key(item_path)
                )
            if len(item) > 500:
                raise errors.invalid_request(
                    "Metadata values can be at most 500 characters long", param=render_key(item_path)
                )
            parsed[key] = UNSET if item == "" else item
        return parsed


class StringMap(Spec):
    """A free-form `Dict[str, str]` such as a meter event's `payload`."""

    def parse(self, value: Any, path: list[str]) -> Any:
        if not isinstance(value, dict):
            raise errors.invalid_request("Invalid object", param=render_key(path))
        for key, item in value.items():
            _scalar(item, path + [key])
        return dict(value)


class Array(Spec):
    def __init__(self, of: Spec, *, max_items: int | None = None, emptyable: bool = False) -> None:
        self.of = of
        self.max_items = max_items
        self.emptyable = emptyable

    def parse(self, value: Any, path: list[str]) -> Any:
        if value == "":
            return self._empty(path)
        if isinstance(value, list):
            indexed = [(str(i), v) for i, v in enumerate(value)]
        elif isinstance(value, dict) and all(k.isdigit() for k in value):
            indexed = sorted(value.items(), key=lambda kv: int(kv[0]))
        else:
            raise errors.invalid_request("Invalid array", param=render_key(path))
        if self.max_items is not None and len(indexed) > self.max_items:
            raise errors.invalid_request(
                f"Invalid array: {render_key(path)} can have at most {self.max_items} items", param=render_key(path)
            )
        return [self.of.parse(item, path + [index]) for index, item in indexed]


class NotSimulated(Spec):
    """A real Stripe parameter the sandbox refuses rather than silently ignores."""

    def parse(self, value: Any, path: list[str]) -> Any:
        raise errors.not_simulated(render_key(path))


NOT_SIMULATED = NotSimulated()


class Hash(Spec):
    def __init__(
        self,
        fields: Mapping[str, Spec],
        *,
        required: Iterable[str] = (),
        not_simulated: Iterable[str] = (),
        emptyable: bool = False,
    ) -> None:
        self.fields: dict[str, Spec] = dict(fields)
        for name in not_simulated:
            self.fields.setdefault(name, NOT_SIMULATED)
        self.required = tuple(required)
        self.emptyable = emptyable

    def parse(self, value: Any, path: list[str]) -> Any:
        if value == "":
            return self._empty(path)
        if not isinstance(value, dict):
            raise errors.invalid_request("Invalid object", param=render_key(path) if path else None)
        for key in value:
            if key not in self.fields:
                raise errors.unknown_parameter(render_key(path + [key]) if path else key)
        for name in self.required:
            if name not in value:
                raise errors.missing_parameter(render_key(path + [name]) if path else name)
        return {name: self.fields[name].parse(item, path + [name]) for name, item in value.items()}


# -- building blocks shared by several endpoints -------------------------------------

EXPAND = Array(Str(), max_items=100)
LIST_PAGING = {
    "limit": Int(minimum=1, maximum=100),
    "starting_after": Str(),
    "ending_before": Str(),
    "expand": EXPAND,
}
RANGE = Hash({"gt": Int(), "gte": Int(), "lt": Int(), "lte": Int()})


class IntOrRange(Spec):
    """`created=123` or `created[gte]=123`."""

    def parse(self, value: Any, path: list[str]) -> Any:
        if isinstance(value, dict):
            return RANGE.parse(value, path)
        return {"eq": Int().parse(value, path)}


CREATED_FILTER = IntOrRange()


def endpoint(fields: Mapping[str, Spec], *, required: Iterable[str] = (), not_simulated: Iterable[str] = (), expand: bool = True) -> Hash:
    """The top-level schema of one endpoint; `expand` is accepted everywhere, as on Stripe."""
    if expand:
        fields = {"expand": EXPAND, **fields}
    return Hash(fields, required=required, not_simulated=not_simulated)


def list_endpoint(fields: Mapping[str, Spec], *, required: Iterable[str] = (), not_simulated: Iterable[str] = ()) -> Hash:
    return Hash({**LIST_PAGING, **fields}, required=required, not_simulated=not_simulated)


def in_range(value: int, condition: dict[str, int] | None) -> bool:
    """Apply a `created`-style filter parsed by `IntOrRange`."""
    if not condition:
        return True
    checks = {
        "eq": lambda bound: value == bound,
        "gt": lambda bound: value > bound,
        "gte": lambda bound: value >= bound,
        "lt": lambda bound: value < bound,
        "lte": lambda bound: value <= bound,
    }
    return all(checks[op](bound) for op, bound in condition.items())


def merge_metadata(current: dict[str, str], update: Any) -> dict[str, str]:
    """Stripe merges metadata updates key by key; `UNSET` clears all or one key."""
    if update is UNSET:
        return {}
    merged = dict(current)
    for key, value in update.items():
        if value is UNSET:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def or_none(value: Any) -> Any:
    """`UNSET` (an empty string sent to clear a field) stored as null."""
    return None if value is UNSET else value
