"""A rich tree of a factory: asset levels, equipment types, signal counts (or signals)."""

from __future__ import annotations

from rich.markup import escape
from rich.tree import Tree

from shopfloor.model._factory import AssetNode, Factory, ResolvedSignal

__all__ = ["render_tree"]

_STYLE = {
    "enterprise": "bold magenta",
    "site": "bold blue",
    "area": "bold cyan",
    "line": "bold green",
    "cell": "yellow",
    "equipment": "white",
}


def _label(asset: AssetNode, signals: list[ResolvedSignal]) -> str:
    style = _STYLE[asset.level]
    text = f"[{style}]{escape(asset.id)}[/]"
    if asset.name != asset.id:
        text += f" {escape(asset.name)}"
    text += f" [dim]{asset.level}[/]"
    if asset.type is not None:
        bound = sum(1 for s in signals if s.binding is not None)
        text += f" [cyan]{escape(asset.type)}[/] [dim]· {len(signals)} signals, {bound} bound[/]"
    return text


def _signal_label(sig: ResolvedSignal) -> str:
    unit = sig.unit or "-"
    text = f"{escape(sig.name)} [dim]{sig.data_type} {escape(unit)} {sig.kind}[/]"
    if sig.derived:
        text += " [italic]derived[/]"
    elif sig.binding is not None:
        text += f" [dim]← {escape(sig.binding.connection)}: {escape(sig.binding.address)}[/]"
    return text


def render_tree(factory: Factory, *, signals: bool = False) -> Tree:
    """The asset tree of ``factory`` as a :class:`rich.tree.Tree`.

    Equipment shows its type and signal count; with ``signals`` each signal is listed with
    its data type, unit, kind and binding.
    """
    by_asset: dict[str, list[ResolvedSignal]] = {}
    for sig in factory.signals():
        by_asset.setdefault(sig.asset_path, []).append(sig)
    nodes: dict[str, Tree] = {}
    root: Tree | None = None
    for asset in factory.assets():
        label = _label(asset, by_asset.get(asset.path, []))
        if asset.parent is None:
            node = root = Tree(label)
        else:
            node = nodes[asset.parent].add(label)
        nodes[asset.path] = node
        if signals:
            for sig in by_asset.get(asset.path, []):
                node.add(_signal_label(sig))
    assert root is not None
    return root
