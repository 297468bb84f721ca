"""A pydantic model's JSON Schema (draft 2020-12) as an OpenAPI 3.0 document holds it.

OpenAPI 3.0 has no "null" type, no `$defs`, no `const` and boolean exclusive bounds; pydantic writes
all four. The document carries each request body's schema inline, made from its model here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

JsonSchema = dict[str, Any]
_NULL: JsonSchema = {"type": "null"}
# Keys whose values are data, not schemas: copied as they are.
_DATA_KEYS = {"default", "enum", "const", "example", "examples"}


def openapi_schema(model: type[BaseModel]) -> JsonSchema:
    """The schema of the body `model` validates: references inlined, null as `nullable`, no titles."""
    schema = model.model_json_schema(mode="validation")
    definitions = schema.pop("$defs", {})
    converted: JsonSchema = _convert(schema, definitions)
    return converted


def _convert(node: Any, definitions: dict[str, JsonSchema]) -> Any:
    if isinstance(node, list):
        return [_convert(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:  # inlined: a body model is never recursive
        referenced = definitions[node["$ref"].rsplit("/", 1)[-1]]
        return _convert({**referenced, **{key: value for key, value in node.items() if key != "$ref"}}, definitions)
    schema = {
        key: value if key in _DATA_KEYS else _convert(value, definitions)
        for key, value in node.items()
        if not (key == "title" and isinstance(value, str))  # a property may be named "title"
    }
    if _NULL in schema.get("anyOf", ()):
        others = [variant for variant in schema.pop("anyOf") if variant != _NULL]
        schema.update(others[0] if len(others) == 1 else {"anyOf": others})
        schema["nullable"] = True
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if not isinstance(schema.get(exclusive, True), bool):  # a number: draft 2020-12's, not yet converted
            schema[bound], schema[exclusive] = schema[exclusive], True
    if "default" in schema and schema["default"] is None and not schema.get("nullable"):
        del schema["default"]  # a field that may be left out but not be null (api.body_fields.Omittable)
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    return schema
