"""Free text from callers (names, labels, filters): one rule for every field.

Text is NFC-normalised and its runs of spaces, tabs and line breaks collapse to one space;
every other character must be printable. That refuses NUL and every other C0/C1 control character and DEL, bidi
overrides and isolates (U+202A-U+202E, U+2066-U+2069), zero-width characters (U+200B-U+200D,
U+2060), byte-order marks (U+FEFF), private-use, unassigned and surrogate code points, and
line/paragraph separators: characters that hide, reorder or forge text where it is shown
(dashboards, invoices, logs, the audit trail).
"""

from __future__ import annotations

import unicodedata

from nobill.errors import InvalidArgument

# Whitespace a person types; it collapses to single spaces. Every other non-printable
# character is refused.
_PLAIN_WHITESPACE = frozenset(" \t\n\r")


def clean_text(value: str, *, field: str, max_length: int, required: bool = True) -> str:
    """The caller's text, normalised; InvalidArgument naming `field` if it is empty (when
    required), too long, or holds a character that is not printable."""
    normalized = unicodedata.normalize("NFC", value)
    for character in normalized:
        # Checked before whitespace collapses: str.split() would quietly turn U+0085 and
        # the line separators into spaces.
        if not character.isprintable() and character not in _PLAIN_WHITESPACE:
            raise InvalidArgument(
                f"{field} must not contain control, formatting or invisible characters "
                f"(found U+{ord(character):04X})",
                field=field,
                reason="FIELD_CHARACTER_NOT_ALLOWED",
            )
    cleaned = " ".join(normalized.split())
    if not cleaned:
        if required:
            raise InvalidArgument(f"{field} is required", field=field, reason="FIELD_REQUIRED")
        return ""
    if len(cleaned) > max_length:
        raise InvalidArgument(f"{field} must be at most {max_length} characters", field=field, reason="FIELD_TOO_LONG")
    return cleaned
