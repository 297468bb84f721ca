"""Free-form input checked field by field, bounded at the door: every problem is a FieldError naming
the field. Text carries no NUL (PostgreSQL refuses it), numbers are finite, whole numbers fit their
column, times fall in a range every database and `datetime` can hold, and free-form JSON is bounded in
depth and size, so whatever is accepted can always be written back out.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from tracker_jobs.core.errors import FieldError

# Epoch values above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_EPOCH_MS_THRESHOLD = 1e11
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # an INTEGER column on both databases
ID_MAX = INT_MAX  # ids are INTEGER columns
# Attributes are a handful of flat values in practice; these bounds leave room for nesting a person
# would write while keeping every stored value well inside what orjson writes back (254 levels).
MAX_JSON_DEPTH = 16
MAX_ATTRIBUTES_BYTES = 16 * 1024


# C0 and C1 control characters, and halves of surrogate pairs (no UTF-8 column can hold one).
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


# A secret is written, never read back: this stands in for it in answers, and sent back means "keep it".
SECRET_SHOWN = "********"  # noqa: S105


def shown(raw: object) -> str:
    """A short rendering of a bad value for an error message; never the repr of a deep structure
    (which can exceed Python's recursion limit) and never more than 40 characters."""
    if isinstance(raw, dict):
        return "an object"
    if isinstance(raw, list):
        return "an array"
    return repr(str(raw)[:40])


def parse_number(field: str, raw: object) -> float:
    if isinstance(raw, bool):
        raise FieldError(field, "must be a number")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise FieldError(field, f"must be a number, got {shown(raw)}") from None
    if not math.isfinite(value):
        raise FieldError(field, "must be a finite number")
    return value


def parse_int(field: str, raw: object, low: int = -(2**63), high: int = 2**63 - 1) -> int:
    """A whole number (an int, or text spelling one) from `low` to `high`, both included."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise FieldError(field, f"must be a whole number, got {shown(raw)}")
    try:
        value = int(raw)
    except ValueError:
        raise FieldError(field, f"must be a whole number, got {shown(raw)}") from None
    if not low <= value <= high:
        raise FieldError(field, f"must be from {low} to {high}")
    return value


def parse_id(field: str, raw: object) -> int:
    return parse_int(field, raw, 1, ID_MAX)


def parse_text(field: str, raw: object, max_length: int, *, required: bool = True) -> str:
    """Text of at most `max_length` characters, stripped, without NUL or other control characters."""
    if not isinstance(raw, str):
        raise FieldError(field, "must be text")
    value = raw.strip()
    if required and not value:
        raise FieldError(field, "is required")
    if len(value) > max_length:
        raise FieldError(field, f"must be at most {max_length} characters")
    check_no_nul(field, value)
    if _UNSTORABLE.search(value):
        raise FieldError(field, "must not contain control characters or unpaired surrogates")
    return value


def check_no_nul(field: str, value: str) -> str:
    if "\x00" in value:
        raise FieldError(field, "must not contain NUL characters")
    return value


def parse_time(field: str, raw: object) -> datetime:
    """Epoch seconds or milliseconds, ISO-8601, or `yyyy-MM-dd HH:mm:ss`; without a zone it is UTC."""
    if (isinstance(raw, int | float) and not isinstance(raw, bool)) or (isinstance(raw, str) and _is_number(raw)):
        epoch = parse_number(field, raw)
        if abs(epoch) > _EPOCH_MS_THRESHOLD:
            epoch /= 1000.0
        try:
            parsed = datetime.fromtimestamp(epoch, UTC)
        except (OverflowError, OSError, ValueError):
            raise FieldError(field, "is out of range") from None
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise FieldError(field, "must be epoch seconds, epoch milliseconds or ISO-8601") from None
        try:
            # 9999-12-31T23:59:59-01:00 is a valid ISO time whose UTC lies past datetime.max.
            parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except OverflowError:
            raise FieldError(field, "is out of range") from None
    else:
        raise FieldError(field, "must be epoch seconds, epoch milliseconds or ISO-8601")
    if not EARLIEST <= parsed < LATEST:
        raise FieldError(field, f"is out of range: {parsed.isoformat()}")
    return parsed


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_json(field: str, value: Any, *, max_bytes: int = MAX_ATTRIBUTES_BYTES) -> Any:
    """Free-form JSON that can be stored and written back: at most MAX_JSON_DEPTH levels deep, at
    most `max_bytes` encoded, with no NUL character (jsonb refuses it) and no number orjson cannot
    write. One C-speed encode does most of the work; the depth walk runs only when the encoding holds
    enough brackets to be that deep."""
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as error:  # nested past 254 levels, or an integer past 64 bits
        raise FieldError(field, f"cannot be stored as JSON ({error})") from None
    if len(encoded) > max_bytes:
        raise FieldError(field, f"must be at most {max_bytes} bytes as JSON, got {len(encoded)}")
    if b"\\u0000" in encoded:
        raise FieldError(field, "must not contain NUL characters")
    if encoded.count(b"[") + encoded.count(b"{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise FieldError(field, f"must be nested at most {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion (the input may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


MAX_UNIQUE_ID_LENGTH = 128


def parse_unique_id(field: str, raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise FieldError(field, "must be a string")
    value = str(raw).strip()
    if not value:
        raise FieldError(field, "is required")
    if len(value) > MAX_UNIQUE_ID_LENGTH or not value.isprintable():
        raise FieldError(field, f"must be at most {MAX_UNIQUE_ID_LENGTH} printable characters")
    return value
