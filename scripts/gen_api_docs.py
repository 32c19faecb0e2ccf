#!/usr/bin/env python3
"""Generate docs/API.md from protos/nobill/v1: each service and RPC with who may call it
(its `(nobill.v1.access)` rule and the roles that hold that permission), its messages and
enums, and the comments written in the .proto files.

    python scripts/gen_api_docs.py          # rewrite docs/API.md
    python scripts/gen_api_docs.py --check  # exit 1 if docs/API.md is stale (used by tests)
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "docs" / "API.md"
PACKAGE = "nobill.v1"

# FileDescriptorProto field numbers used in SourceCodeInfo paths.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED, METHOD, ENUM_VALUE = 2, 3, 2, 2


def descriptor_set() -> object:
    """protos/nobill/v1 compiled with comments (protoc from grpcio-tools)."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "nobill" / "v1").glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.pb"
        args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", "--include_source_info", f"--descriptor_set_out={out}", *sources]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comments(file: object) -> dict[tuple[int, ...], str]:
    found = {}
    for location in file.source_code_info.location:  # type: ignore[attr-defined]
        text = location.leading_comments.strip() or location.trailing_comments.strip()
        if text:
            found[tuple(location.path)] = " ".join(line.strip() for line in text.splitlines())
    return found


def _type_name(field: object) -> str:
    from google.protobuf import descriptor_pb2

    kind = descriptor_pb2.FieldDescriptorProto
    if field.type in (kind.TYPE_MESSAGE, kind.TYPE_ENUM):  # type: ignore[attr-defined]
        name = field.type_name.lstrip(".")  # type: ignore[attr-defined]
        short = name[len(PACKAGE) + 1 :] if name.startswith(PACKAGE + ".") else name
        return f"[`{short}`](#{_anchor(short)})" if name.startswith(PACKAGE + ".") else f"`{short}`"
    label = kind.Type.Name(field.type).removeprefix("TYPE_").lower()  # type: ignore[attr-defined]
    return f"`{label}`"


def _anchor(name: str) -> str:
    return name.lower().replace(".", "")


def _who_may_call(rule: object) -> str:
    from nobill.auth.permissions import ROLE_PERMISSIONS

    kind = rule.WhichOneof("rule")  # type: ignore[attr-defined]
    value = getattr(rule, kind) if kind else None
    if kind == "org_permission":
        roles = [role.value.replace("_", " ").title() for role, held in ROLE_PERMISSIONS.items() if value in held]
        return f"`{value}` in the org: {', '.join(roles)}; services with scope `{value}`"
    if kind == "any_user":
        return "any signed-in user (not services)"
    if kind == "any_principal":
        return "any authenticated user or service"
    if kind == "service_scope":
        return f"services with scope `{value}` (not users)"
    return "nobody (no access rule)"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    from nobill.v1 import access_pb2

    files = [f for f in descriptor_set().file if f.package == PACKAGE]  # type: ignore[attr-defined]
    out = [
        "# NOBill API reference (`nobill.v1`)",
        "",
        "Generated from `protos/nobill/v1` by `scripts/gen_api_docs.py` (`make gen`); do not edit.",
        "Every call needs `authorization: Bearer <JWT>` except health and reflection. Who may call",
        "each RPC is its `(nobill.v1.access)` rule; roles hold the permissions listed in README.",
        "Failed calls carry `google.rpc` details (ErrorInfo, BadRequest, RetryInfo): see docs/ARCHITECTURE.md.",
        "",
    ]
    services, messages, enums = [], [], []
    for file in files:
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            services.append((file, comments, s_index, service))
        for m_index, message in enumerate(file.message_type):
            messages.extend(_messages(comments, (MESSAGE, m_index), message, ""))
        for e_index, enum in enumerate(file.enum_type):
            enums.append((comments, (ENUM, e_index), enum, enum.name))
        for m_index, message in enumerate(file.message_type):
            enums.extend(_nested_enums(comments, (MESSAGE, m_index), message, message.name))

    out.append("## Services\n")
    for file, comments, s_index, service in services:
        out.append(f"- [`{service.name}`](#{_anchor(service.name)}) ({file.name})")
    out.append("")
    for file, comments, s_index, service in services:
        out.append(f"### {service.name}\n")
        if (SERVICE, s_index) in comments:
            out.append(comments[(SERVICE, s_index)] + "\n")
        out.append("| RPC | request → response | who may call |")
        out.append("|---|---|---|")
        for m_index, method in enumerate(service.method):
            rule = method.options.Extensions[access_pb2.access]
            stream_in = "stream " if method.client_streaming else ""
            stream_out = "stream " if method.server_streaming else ""
            request = method.input_type.lstrip(".").removeprefix(PACKAGE + ".")
            response = method.output_type.lstrip(".").removeprefix(PACKAGE + ".")
            out.append(
                f"| [`{method.name}`](#{_anchor(service.name + method.name)}) "
                f"| {stream_in}[`{request}`](#{_anchor(request)}) → {stream_out}[`{response}`](#{_anchor(response)}) "
                f"| {_escape(_who_may_call(rule))} |"
            )
        out.append("")
        for m_index, method in enumerate(service.method):
            out.append(f'<a id="{_anchor(service.name + method.name)}"></a>')
            out.append(f"#### {service.name}.{method.name}\n")
            comment = comments.get((SERVICE, s_index, METHOD, m_index), "")
            if comment:
                out.append(comment + "\n")
            out.append(f"Who may call: {_who_may_call(method.options.Extensions[access_pb2.access])}.\n")
    out.append("## Messages\n")
    for name, comment, fields in messages:
        out.append(f"### {name}\n")
        if comment:
            out.append(comment + "\n")
        if not fields:
            out.append("No fields.\n")
            continue
        out.append("| field | type | description |")
        out.append("|---|---|---|")
        for field, field_comment in fields:
            repeated = "repeated " if field.label == field.LABEL_REPEATED else ""
            out.append(f"| `{field.name}` | {repeated}{_type_name(field)} | {_escape(field_comment)} |")
        out.append("")
    out.append("## Enums\n")
    for comments, path, enum, name in enums:
        out.append(f"### {name}\n")
        if path in comments:
            out.append(comments[path] + "\n")
        out.append("| value | number | description |")
        out.append("|---|---|---|")
        for v_index, value in enumerate(enum.value):
            out.append(f"| `{value.name}` | {value.number} | {_escape(comments.get((*path, ENUM_VALUE, v_index), ''))} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _messages(comments: dict, path: tuple[int, ...], message: object, prefix: str) -> list:
    name = prefix + message.name  # type: ignore[attr-defined]
    fields = [(field, comments.get((*path, FIELD, f_index), "")) for f_index, field in enumerate(message.field)]  # type: ignore[attr-defined]
    found = [(name, comments.get(path, ""), fields)]
    for n_index, nested in enumerate(message.nested_type):  # type: ignore[attr-defined]
        if not nested.options.map_entry:
            found.extend(_messages(comments, (*path, NESTED, n_index), nested, name + "."))
    return found


def _nested_enums(comments: dict, path: tuple[int, ...], message: object, prefix: str) -> list:
    found = []
    for e_index, enum in enumerate(message.enum_type):  # type: ignore[attr-defined]
        found.append((comments, (*path, 4, e_index), enum, f"{prefix}.{enum.name}"))
    for n_index, nested in enumerate(message.nested_type):  # type: ignore[attr-defined]
        found.extend(_nested_enums(comments, (*path, NESTED, n_index), nested, f"{prefix}.{nested.name}"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether docs/API.md is up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print("docs/API.md is stale; run: make gen (or python scripts/gen_api_docs.py)", file=sys.stderr)
            return 1
        print("docs/API.md is up to date")
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
