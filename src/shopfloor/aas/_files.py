"""AAS environments as files: JSON (canonical, stable) and AASX packages, read strictly."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from basyx.aas import model
from basyx.aas.adapter import aasx
from basyx.aas.adapter.json import AASToJsonEncoder, read_aas_json_file_into
from basyx.aas.model.concept import ConceptDescription
from pyecma376_2.core_properties import OPCCoreProperties

from shopfloor.aas._errors import AasError

__all__ = [
    "Environment",
    "environment_dict",
    "environment_json",
    "read_environment",
    "to_jsonable",
    "write_environment",
]

Environment = model.DictIdentifiableStore[model.Identifiable]
"""An AAS environment: shells, submodels and concept descriptions by id."""


def _files() -> aasx.DictSupplementaryFileContainer:
    return aasx.DictSupplementaryFileContainer()  # type: ignore[no-untyped-call]


class _Encoder(AASToJsonEncoder):
    """The SDK's encoder, with a shell's submodel references in a stable order and the
    serializer of each concrete type looked up once (the SDK tries them one by one)."""

    _by_type: ClassVar[dict[type, Callable[[Any], Any]]] = {}

    def default(self, obj: object) -> object:
        fn = self._by_type.get(type(obj))
        if fn is None:
            for typ, method in self._get_aas_class_serializers().items():
                if isinstance(obj, typ):
                    fn = method
                    break
            else:
                return super().default(obj)
            self._by_type[type(obj)] = fn
        return fn(obj)

    @classmethod
    def _asset_administration_shell_to_json(
        cls, obj: model.AssetAdministrationShell
    ) -> dict[str, object]:
        data = super()._asset_administration_shell_to_json(obj)
        if "submodels" in data:
            data["submodels"] = sorted(obj.submodel, key=lambda r: [str(k.value) for k in r.key])
        return data


def to_jsonable(obj: Any) -> Any:
    """``obj`` (AAS objects, possibly in lists and dicts) as plain JSON values.

    A shell's submodel references are a set in the SDK; they are sorted by id here so that
    the same model always gives the same JSON.
    """
    return json.loads(json.dumps(obj, cls=_Encoder))


def _groups(env: Environment) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {
        "assetAdministrationShells": [],
        "submodels": [],
        "conceptDescriptions": [],
    }
    for obj in env:
        if isinstance(obj, model.AssetAdministrationShell):
            groups["assetAdministrationShells"].append(obj)
        elif isinstance(obj, model.Submodel):
            groups["submodels"].append(obj)
        elif isinstance(obj, ConceptDescription):
            groups["conceptDescriptions"].append(obj)
    return {k: v for k, v in groups.items() if v}


def environment_dict(env: Environment) -> dict[str, Any]:
    """The JSON object of an environment (AAS Part 1 JSON): shells, submodels, concepts."""
    return to_jsonable(_groups(env))  # type: ignore[no-any-return]


def environment_json(env: Environment) -> str:
    """The environment as indented JSON text (identical for identical environments)."""
    return json.dumps(environment_dict(env), indent=2, ensure_ascii=False) + "\n"


def write_environment(env: Environment, path: str | os.PathLike[str]) -> None:
    """Write ``env`` as JSON (``.json``) or as an AASX package (``.aasx``, JSON part)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".json":
        target.write_text(environment_json(env), encoding="utf-8")
        return
    if suffix != ".aasx":
        raise AasError(f"{target}: write .json or .aasx, not {suffix or 'no extension'}")
    with aasx.AASXWriter(target, failsafe=False) as writer:
        writer.write_all_aas_objects("/aasx/data.json", env, _files(), write_json=True)
        props = OPCCoreProperties()  # type: ignore[no-untyped-call]
        props.creator = "shopfloor"
        props.title = "Asset Administration Shells"
        writer.write_core_properties(props)


def read_environment(path: str | os.PathLike[str]) -> Environment:
    """Read a JSON environment or an AASX package with the SDK's strict readers.

    Anything that does not conform (unknown model types, missing attributes, violated
    constraints the SDK checks, duplicate ids) raises :class:`AasError` naming the file.
    """
    source = Path(path)
    env: Environment = model.DictIdentifiableStore()
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise AasError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        if data[:2] == b"PK":
            with aasx.AASXReader(io.BytesIO(data), failsafe=False) as reader:
                reader.read_into(env, _files())
        else:
            read_aas_json_file_into(env, io.StringIO(data.decode("utf-8")), failsafe=False)
    except (
        KeyError,
        ValueError,
        TypeError,
        model.AASConstraintViolation,
        UnicodeDecodeError,
        zipfile.BadZipFile,
    ) as exc:
        raise AasError(f"{source}: not a valid AAS environment: {exc}") from exc
    return env
