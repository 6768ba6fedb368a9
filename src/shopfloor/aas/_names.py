"""Small helpers shared by export and import: idShorts, references, language strings."""

from __future__ import annotations

import re
from typing import Final

from basyx.aas import model

from shopfloor.aas._semantics import SF

__all__ = [
    "ID_SHORT",
    "english",
    "id_short_for",
    "ref",
    "ref_value",
    "sf_ref",
    "text",
]

ID_SHORT: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
"""Constraint AASd-002 as AAS 3.0.0 words it: letters, digits and ``_``, a letter first.

(3.0.1 also allows ``-``; the stricter form is valid under both.)"""


def id_short_for(name: str, taken: set[str]) -> str:
    """A valid idShort for ``name``, unique among ``taken`` (which it joins).

    Valid names stay as they are; in others every other character becomes ``_``, an ``x``
    goes in front when they do not start with a letter, and clashes get a ``_2``… suffix.
    """
    candidate = name
    if not ID_SHORT.fullmatch(candidate):
        candidate = re.sub(r"[^A-Za-z0-9_]", "_", candidate)
        if not candidate or not ("A" <= candidate[0] <= "Z" or "a" <= candidate[0] <= "z"):
            candidate = "x" + candidate
    unique, n = candidate, 2
    while unique in taken:
        unique = f"{candidate}_{n}"
        n += 1
    taken.add(unique)
    return unique


def ref(value: str) -> model.ExternalReference:
    """An external reference to the global id ``value`` (a semantic id)."""
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def sf_ref(concept: str) -> model.ExternalReference:
    """A reference to one of shopfloor's own concepts (``urn:shopfloor:aas:1:0:<concept>``)."""
    return ref(SF + concept)


def ref_value(reference: model.Reference | None) -> str | None:
    """The value of the last key of ``reference`` (``None`` without one)."""
    if reference is None or not reference.key:
        return None
    return str(reference.key[-1].value)


def text(value: str) -> model.MultiLanguageTextType:
    """An English text."""
    return model.MultiLanguageTextType({"en": value})


def english(strings: model.LangStringSet | None) -> str | None:
    """The English text of a language string set (else the first one; ``None`` when empty)."""
    if strings is None or len(strings) == 0:
        return None
    for lang in ("en", "en-US", "en-GB"):
        if lang in strings:
            return str(strings[lang])
    for lang in strings:
        if lang.lower().startswith("en"):
            return str(strings[lang])
    return str(next(iter(strings.values())))
