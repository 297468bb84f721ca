"""Field types for request bodies (api.bodies): each checks its value with the rules of core.fields, so a
body field and a query parameter or a device's message refuse the same input with the same words, and
each carries the JSON schema the OpenAPI document shows for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar

from annotated_types import GroupedMetadata, MaxLen, MinLen
from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, WithJsonSchema
from pydantic_core import CoreSchema, PydanticCustomError

from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.fields import ID_MAX, parse_id, parse_text, parse_time, shown


def checked(parse: Callable[[str, Any], Any]) -> BeforeValidator:
    """A core.fields check (`parse(field, raw)`) run on the raw value; its problem becomes the field's error
    (pydantic knows where the field is, so the name given to the check is left empty)."""

    def run(raw: Any) -> Any:
        try:
            return parse("", raw)
        except FieldError as error:
            raise PydanticCustomError("field_problem", "{problem}", {"problem": error.problem}) from None

    return BeforeValidator(run)


@dataclass(frozen=True)
class Text(GroupedMetadata):
    """Text through core.fields.parse_text: stripped, not empty, at most `max_length` characters, without
    NUL or other control characters. Use as `Annotated[str, Text(128)]`."""

    max_length: int

    def __iter__(self) -> Iterator[object]:
        yield MinLen(1)
        yield MaxLen(self.max_length)
        yield checked(partial(parse_text, max_length=self.max_length))


@dataclass(frozen=True)
class OneOf(GroupedMetadata):
    """One of a fixed set of names; the document lists them. Use as `Annotated[str, OneOf(NAMES)]`."""

    names: tuple[str, ...]

    def __iter__(self) -> Iterator[object]:
        yield checked(self._parse)
        yield WithJsonSchema({"type": "string", "enum": list(self.names)})

    def _parse(self, field: str, raw: object) -> str:
        if not isinstance(raw, str) or raw not in self.names:
            raise FieldError(field, f"expected one of {', '.join(self.names)}, got {shown(raw)}")
        return raw


class _NotNull:
    """Validates `T | None` as `T`: a default of None (which pydantic does not validate) marks the field as
    left out, while a null the client sends is refused as the wrong type."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        return schema["schema"] if schema["type"] == "nullable" else schema


T = TypeVar("T")
# A field a body may leave out (None then, and not in `RequestBody.given()`) but may not set to null.
Omittable = Annotated[T | None, _NotNull()]

Id = Annotated[int, Field(ge=1, le=ID_MAX), checked(parse_id)]
# Epoch seconds or milliseconds, or ISO-8601, within the range every database holds.
Time = Annotated[datetime, checked(parse_time)]
