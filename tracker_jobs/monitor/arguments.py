"""The arguments a job declares (its signature after `ctx`), and checking JSON arguments against them."""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any

from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.fields import INT_MAX, INT_MIN, check_json, parse_int
from tracker_jobs.jobs.base import JobSpec

_JSON_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}


@dataclass(frozen=True)
class JobParameter:
    name: str
    annotation: Any
    required: bool
    default: Any

    def as_api(self) -> dict[str, Any]:
        described = {"name": self.name, "type": type_name(self.annotation), "required": self.required}
        return described if self.required else {**described, "default": self.default}


def job_parameters(spec: JobSpec) -> list[JobParameter]:
    hints = typing.get_type_hints(spec.function)
    parameters = list(inspect.signature(spec.function).parameters.values())[1:]  # after ctx
    return [
        JobParameter(
            parameter.name,
            hints.get(parameter.name, Any),
            parameter.default is inspect.Parameter.empty,
            None if parameter.default is inspect.Parameter.empty else parameter.default,
        )
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def type_name(annotation: Any) -> str:
    """The JSON type a parameter takes, as the API and the CLI show it."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(argument) for argument in arguments)
    if origin is list:
        return f"array of {type_name(arguments[0])}" if arguments else "array"
    if origin is dict or annotation is dict:
        return "object"
    if origin is typing.Literal:
        return " | ".join(repr(argument) for argument in arguments)
    return _JSON_TYPE_NAMES.get(annotation, "any")


def check_arguments(spec: JobSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The arguments to enqueue the job with; FieldError names the first one that does not fit."""
    parameters = {parameter.name: parameter for parameter in job_parameters(spec)}
    for name in given:
        if name not in parameters:
            raise FieldError(name, f"{spec.name} takes no such argument (it takes: {', '.join(parameters) or 'none'})")
        # Job payloads are stored as JSON and shown back in task records: bounded like any free-form input.
        check_json(name, given[name])
        if isinstance(given[name], int) and not isinstance(given[name], bool):
            parse_int(name, given[name], INT_MIN, INT_MAX)  # jobs hand their numbers to INTEGER columns
    for parameter in parameters.values():
        if parameter.name in given:
            if not fits(given[parameter.name], parameter.annotation):
                raise FieldError(parameter.name, f"must be {type_name(parameter.annotation)}")
        elif parameter.required:
            raise FieldError(parameter.name, "is required")
    return given


def fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value is of the declared type (int for float is fine; bool is never a number)."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, argument) for argument in arguments)
    if origin is typing.Literal:
        return value in arguments
    if origin is list or annotation is list:
        return isinstance(value, list) and (not arguments or all(fits(item, arguments[0]) for item in value))
    if origin is dict or annotation is dict:
        value_type = arguments[1] if arguments else Any
        return isinstance(value, dict) and all(fits(item, value_type) for item in value.values())
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is type(None) or annotation is None:
        return value is None
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True
