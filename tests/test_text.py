"""The free-text rule (nobill.text.clean_text)."""

from __future__ import annotations

import pytest

from nobill.errors import InvalidArgument
from nobill.text import clean_text


@pytest.mark.parametrize("code_point", [0x00, 0x0B, 0x1C, 0x1B, 0x7F, 0x85, 0x9F, 0x200B, 0x200E, 0x202A, 0x202E, 0x2066, 0x2069,
                                        0xFEFF, 0xE000, 0x2028, 0x2029, 0xFFFF])
def test_control_formatting_and_invisible_characters_are_refused(code_point: int) -> None:
    with pytest.raises(InvalidArgument, match=f"U\\+{code_point:04X}|required") as refused:
        clean_text(f"a{chr(code_point)}b", field="name", max_length=50)

    assert refused.value.field == "name"


def test_whitespace_collapses_and_text_is_nfc() -> None:
    assert clean_text("  e\u0301te\u0301\t\n  2026 ", field="name", max_length=50) == "\u00e9t\u00e9 2026"


def test_length_counts_after_normalisation() -> None:
    assert clean_text("a  " * 10, field="name", max_length=19) == " ".join("a" * 10)
    with pytest.raises(InvalidArgument, match="at most 18"):
        clean_text("a  " * 10, field="name", max_length=18)


def test_empty_text_is_required_unless_optional() -> None:
    with pytest.raises(InvalidArgument, match="required"):
        clean_text(" \t ", field="name", max_length=5)
    assert clean_text(" ", field="note", max_length=5, required=False) == ""
