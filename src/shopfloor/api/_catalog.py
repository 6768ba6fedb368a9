"""The signal catalog as one Arrow table: the model's signals and those discovered at run time.

Lists of signals and latest values filter, sort and page this table with Arrow compute
kernels, so a catalog of 150,000 signals costs no Python object per signal until a page of
at most :attr:`ApiLimits.page_max` rows is turned into JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.api._schemas import AssetTypeOut, SignalDefOut
from shopfloor.historian.base import Historian
from shopfloor.model import Factory
from shopfloor.model._factory import resolve_types

__all__ = ["CATALOG_SCHEMA", "model_catalog", "signal_catalog", "subtree_mask", "type_out"]

CATALOG_SCHEMA: Final = pa.schema(
    [
        ("path", pa.string()),
        ("asset", pa.string()),
        ("name", pa.string()),
        ("data_type", pa.string()),
        ("unit", pa.string()),
        ("kind", pa.string()),
        ("description", pa.string()),
        ("semantic_id", pa.string()),
        ("low", pa.float64()),
        ("high", pa.float64()),
        ("derived", pa.bool_()),
        ("writable", pa.bool_()),
        ("connection", pa.string()),
        ("source", pa.string()),
    ]
)


def model_catalog(factory: Factory) -> pa.Table:
    """Every signal the factory file declares, sorted by path."""
    rows = [
        {
            "path": s.path,
            "asset": s.asset_path,
            "name": s.name,
            "data_type": s.data_type,
            "unit": s.unit,
            "kind": s.kind,
            "description": s.description,
            "semantic_id": s.semantic_id,
            "low": s.low,
            "high": s.high,
            "derived": s.derived,
            "writable": s.kind == "setpoint" and s.binding is not None,
            "connection": s.binding.connection if s.binding is not None else None,
            "source": "model",
        }
        for s in factory.signals()
    ]
    table = pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA)
    return table.sort_by("path")


async def signal_catalog(model: pa.Table, historian: Historian) -> pa.Table:
    """``model`` plus the historian's signals the model does not know, sorted by path."""
    stored = await historian.signals()
    extra = stored.filter(pc.invert(pc.is_in(stored.column("path"), value_set=model["path"])))
    if extra.num_rows == 0:
        return model
    # Discovered signals are few (one device's worth at a time): plain Python is fine here.
    split = [str(p).rpartition("/") for p in extra.column("path").to_pylist()]
    n = extra.num_rows
    discovered = pa.table(
        {
            "path": extra.column("path"),
            "asset": pa.array([a for a, _, _ in split], pa.string()),
            "name": pa.array([b for _, _, b in split], pa.string()),
            "data_type": extra.column("data_type"),
            "unit": extra.column("unit"),
            "kind": extra.column("kind"),
            "description": pa.array([""] * n, pa.string()),
            "semantic_id": pa.nulls(n, pa.string()),
            "low": pa.nulls(n, pa.float64()),
            "high": pa.nulls(n, pa.float64()),
            "derived": pa.array([False] * n, pa.bool_()),
            "writable": pa.array([False] * n, pa.bool_()),
            "connection": pa.nulls(n, pa.string()),
            "source": pa.array(["discovered"] * n, pa.string()),
        }
    ).cast(CATALOG_SCHEMA)
    return pa.concat_tables([model, discovered]).sort_by("path")


def subtree_mask(paths: pa.Array | pa.ChunkedArray, subtrees: Iterable[str]) -> pa.Array:
    """True where a path lies in one of ``subtrees`` (whole segments)."""
    mask: pa.Array | pa.ChunkedArray | None = None
    for s in subtrees:
        m = pc.or_(pc.equal(paths, s), pc.starts_with(paths, s + "/"))
        mask = m if mask is None else pc.or_(mask, m)
    if mask is None:
        return pa.array([False] * len(paths), pa.bool_())
    return mask


def type_out(factory: Factory) -> dict[str, AssetTypeOut]:
    """Every asset type of ``factory``, merged with its ancestors, in file order."""
    docs = {t.id: t for t in factory.document.types}
    resolved = resolve_types(docs)
    out: dict[str, AssetTypeOut] = {}
    for type_id, r in resolved.items():
        doc = docs[type_id]
        out[type_id] = AssetTypeOut(
            id=type_id,
            name=doc.name,
            description=doc.description,
            extends=doc.extends,
            chain=list(r.chain),
            signals=[
                SignalDefOut(
                    name=s.name,
                    data_type=s.data_type,
                    unit=s.unit,
                    kind=s.kind,
                    description=s.description,
                    semantic_id=s.semantic_id,
                    low=s.limits.low if s.limits else None,
                    high=s.limits.high if s.limits else None,
                    derived=s.derived,
                )
                for s in r.signals.values()
            ],
            attributes=dict(r.attributes),
            states=dict(r.states),
        )
    return out
