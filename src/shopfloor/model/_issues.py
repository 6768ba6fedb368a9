"""Problems found in a factory file, and the error that carries all of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shopfloor.errors import ConfigError

__all__ = ["FactoryFileError", "ModelIssue", "format_path"]


def format_path(path: Iterable[str | int]) -> str:
    """``("enterprise", "sites", 0, "timezone")`` → ``"enterprise.sites[0].timezone"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class ModelIssue:
    """One problem in a factory file: where it is (file, line, column, key path) and what.

    ``line`` and ``column`` are 1-based, ``None`` when the position is unknown (e.g. the
    file could not be read). ``path`` is the dotted key path, e.g.
    ``"enterprise.sites[0].areas[1].lines[0].equipment[3].type"``.
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class FactoryFileError(ConfigError):
    """A factory file is invalid; :attr:`issues` lists every problem found, in file order."""

    def __init__(self, issues: list[ModelIssue]) -> None:
        self.issues: list[ModelIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
