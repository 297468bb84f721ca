"""JSON request bodies read into pydantic models: the model is both the check and the OpenAPI schema.

A domain declares its bodies as `RequestBody` subclasses (in its `schemas.py`, with the field types of
api.body_fields) and reads one with `await read_body(request, Model)`. Every problem is the same 400
as anywhere else: a FieldError naming the field (`loc` joined with dots) and the problem.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from tracker_jobs.api.params import json_object
from tracker_jobs.core.errors import FieldError

MAX_SHOWN_NAME = 40  # of a key the client sent, in an error message
# Messages of core.fields checks (api.body_fields.checked) and pydantic's own name the rule and show at most
# 40 characters of the input; bounded all the same.
MAX_PROBLEM = 200
# Pydantic's words for a wrong type, as core.fields words them.
_WRONG_TYPE = {
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a JSON object",
}


class RequestBody(BaseModel):
    """A JSON object body: each field checked by its type, unknown keys refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    subject: ClassVar[str] = "body"  # what an unknown key is not a field of: "colour: is not a device field"

    def given(self) -> dict[str, Any]:
        """The fields the body sets, by their Python names: those it holds and those with a default. A field
        it left out that has none (an `Omittable` one) is not there, so a PUT changes only what it names."""
        return {
            name: value
            for name, value in self.model_dump().items()
            if value is not None or name in self.model_fields_set
        }


Body = TypeVar("Body", bound=RequestBody)


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """The request's body as `model`; 400 naming the field otherwise (or saying the body is no JSON object)."""
    body = await json_object(request)
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise _field_error(model, error) from None


def _field_error(model: type[RequestBody], error: ValidationError) -> FieldError:
    """One FieldError for the whole body: an unknown key first (as a client most often means a typo), else
    the first field that does not fit."""
    errors = error.errors(include_url=False, include_input=False)
    first = next((found for found in errors if found["type"] == "extra_forbidden"), errors[0])
    field = ".".join(str(part)[:MAX_SHOWN_NAME] for part in first["loc"]) or "body"
    return FieldError(field, _problem(model, first))


def _problem(model: type[RequestBody], error: ErrorDetails) -> str:
    kind, context = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        expected = ", ".join(field.alias or name for name, field in model.model_fields.items())
        return f"is not a {model.subject} field; expected {expected}"
    if kind == "missing" or (kind == "string_too_short" and context.get("min_length") == 1):
        return "is required"
    if kind == "string_too_short":
        return f"must be at least {context['min_length']} characters"
    if kind == "string_too_long":
        return f"must be at most {context['max_length']} characters"
    if kind == "too_short":  # a list
        return "must not be empty" if context.get("min_length") == 1 else f"must hold at least {context['min_length']}"
    return _WRONG_TYPE.get(kind, error["msg"][:MAX_PROBLEM])
