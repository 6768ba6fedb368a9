"""The JSON Schema of the factory file format (draft 2020-12), for editors and tools."""

from __future__ import annotations

from typing import Any

from shopfloor.model._schema import FactoryDocument

__all__ = ["factory_json_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def factory_json_schema() -> dict[str, Any]:
    """The JSON Schema of a factory file.

    Generated from the pydantic models, with what they accept beyond their own shape made
    explicit: a binding may be a plain address string.
    """
    schema = FactoryDocument.model_json_schema(mode="validation")
    defs = schema["$defs"]
    bindings = defs["Equipment"]["properties"]["bindings"]
    bindings["additionalProperties"] = {
        "anyOf": [
            {"type": "string", "minLength": 1, "description": "Address on the default connection."},
            {"$ref": "#/$defs/BindingSpec"},
        ]
    }
    return {
        "$schema": _DIALECT,
        "$id": "https://shopfloor.dev/schemas/factory.json",
        "title": "shopfloor factory file",
        **{k: v for k, v in schema.items() if k != "title"},
    }
