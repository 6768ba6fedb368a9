"""The ValueOnly serialisation of AAS Part 2 (``$value``), from the normal JSON form.

A submodel or collection becomes an object of its children by idShort, a list an array;
a property its value as a JSON number, boolean or string according to its ``valueType``
(``null`` when it has none); a multi-language property an array of ``{language: text}``;
a range ``{"min", "max"}``; a file or blob ``{"contentType", "value"}``; a reference
element its reference; a relationship ``{"first", "second"}`` (and ``annotations``); an
entity ``{"statements", "entityType", "globalAssetId", "specificAssetIds"}``; an event
``{"observed"}``. Operations and capabilities have no value and are left out.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["value_only"]

_INTEGER: Final = frozenset(
    {
        "xs:integer",
        "xs:long",
        "xs:int",
        "xs:short",
        "xs:byte",
        "xs:nonNegativeInteger",
        "xs:nonPositiveInteger",
        "xs:positiveInteger",
        "xs:negativeInteger",
        "xs:unsignedLong",
        "xs:unsignedInt",
        "xs:unsignedShort",
        "xs:unsignedByte",
    }
)
_DECIMAL: Final = frozenset({"xs:double", "xs:float", "xs:decimal"})
_NO_VALUE: Final = frozenset({"Operation", "Capability"})


def _scalar(value: str | None, value_type: str | None) -> Any:
    if value is None:
        return None
    try:
        if value_type == "xs:boolean":
            return value.strip() in ("true", "1")
        if value_type in _INTEGER:
            return int(value)
        if value_type in _DECIMAL:
            number = float(value)
            return number if number == number and abs(number) != float("inf") else value
    except ValueError:
        return value
    return value


def _children(elements: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for element in elements:
        if element.get("modelType") in _NO_VALUE or "idShort" not in element:
            continue
        out[element["idShort"]] = value_only(element)
    return out


def value_only(element: dict[str, Any]) -> Any:
    """The ValueOnly form of a submodel or submodel element given in its JSON form."""
    kind = element.get("modelType")
    if kind == "Submodel":
        return _children(element.get("submodelElements", []))
    if kind == "SubmodelElementCollection":
        return _children(element.get("value", []))
    if kind == "SubmodelElementList":
        return [
            value_only(e) for e in element.get("value", []) if e.get("modelType") not in _NO_VALUE
        ]
    if kind == "Property":
        return _scalar(element.get("value"), element.get("valueType"))
    if kind == "MultiLanguageProperty":
        return [{s["language"]: s["text"]} for s in element.get("value", [])]
    if kind == "Range":
        return {
            "min": _scalar(element.get("min"), element.get("valueType")),
            "max": _scalar(element.get("max"), element.get("valueType")),
        }
    if kind in ("File", "Blob"):
        return {"contentType": element.get("contentType"), "value": element.get("value")}
    if kind == "ReferenceElement":
        return element.get("value")
    if kind in ("RelationshipElement", "AnnotatedRelationshipElement"):
        out: dict[str, Any] = {"first": element.get("first"), "second": element.get("second")}
        if kind == "AnnotatedRelationshipElement":
            out["annotations"] = [value_only(a) for a in element.get("annotations", [])]
        return out
    if kind == "Entity":
        entity: dict[str, Any] = {
            "statements": _children(element.get("statements", [])),
            "entityType": element.get("entityType"),
        }
        if "globalAssetId" in element:
            entity["globalAssetId"] = element["globalAssetId"]
        if "specificAssetIds" in element:
            entity["specificAssetIds"] = element["specificAssetIds"]
        return entity
    if kind == "BasicEventElement":
        return {"observed": element.get("observed")}
    return None
