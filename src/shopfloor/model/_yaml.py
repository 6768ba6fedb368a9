"""Reading YAML while keeping where every key is: ``(key path) → (line, column)``.

PyYAML composes the document into nodes that carry marks; we construct plain Python values
from those nodes ourselves so that we can remember the position of every mapping key and
sequence item, and report duplicate keys (which PyYAML silently accepts) as problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["Key", "Path", "YamlDocument", "YamlProblem", "read_yaml"]

Key = str | int
Path = tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class YamlProblem:
    """A problem found while reading YAML, with its 1-based position when known."""

    path: Path
    line: int | None
    column: int | None
    message: str


@dataclass(slots=True)
class YamlDocument:
    """The constructed data, the position of every key path, and reading problems."""

    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    problems: list[YamlProblem] = field(default_factory=list)

    def position(self, path: Path) -> tuple[int | None, int | None]:
        """The position of the deepest prefix of ``path`` that has one."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(path[:end])
            if mark is not None:
                return mark
        return None, None


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument) -> None:
        self._loader = loader
        self._doc = doc

    def build(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self._doc.marks[(*path, i)] = _pos(item)
                items.append(self.build(item, (*path, i)))
            return items
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        value = self._loader.construct_object(node, deep=True)
        # YAML 1.1 reads 14:30 as a base-60 integer; a factory file means a time of day.
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and isinstance(node.value, str)
            and ":" in node.value
        ):
            return node.value
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        self._loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or isinstance(key, float | bool) or not isinstance(key, str | int):
                line, column = _pos(key_node)
                self._doc.problems.append(
                    YamlProblem(path, line, column, "mapping keys must be strings or integers")
                )
                continue
            key_path = (*path, key)
            if key in result:
                line, column = _pos(key_node)
                first = self._doc.marks.get(key_path)
                where = f" (first defined on line {first[0]})" if first else ""
                self._doc.problems.append(
                    YamlProblem(key_path, line, column, f"duplicate key {key!r}{where}")
                )
                continue
            self._doc.marks[key_path] = _pos(key_node)
            result[key] = self.build(value_node, key_path)
        return result


def read_yaml(text: str) -> YamlDocument:
    """Read one YAML document from ``text``; syntax errors become problems, not exceptions."""
    doc = YamlDocument(data=None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.marks[()] = _pos(node)
            doc.data = _Builder(loader, doc).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        doc.problems.append(YamlProblem((), line, column, f"YAML syntax error: {problem}"))
        doc.data = None
    except yaml.YAMLError as exc:
        doc.problems.append(YamlProblem((), None, None, f"YAML error: {exc}"))
        doc.data = None
    finally:
        loader.dispose()
    return doc
