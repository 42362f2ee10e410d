"""Text helpers shared by the AgentDojo harness's checks, in-step models and attacks: the
attacker's identifiers found in text (IBANs, email addresses, URLs), their normalized and
filter-evading spellings, and every string inside a value."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["evade", "identifiers_in", "normalize", "squash", "strings_in"]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b|\bIBAN:?\s*(\d{8,34})\b")
_URL = re.compile(
    r"(?:https?://)?(?:www\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:com|org|net|io|ly|co|info)"
    r"(?:/[^\s'\"]*)?",
    re.IGNORECASE,
)
_DEFANG = (
    (re.compile(r"\s*[\[(]\s*(?:at|@)\s*[\])]\s*", re.IGNORECASE), "@"),
    (re.compile(r"\s*[\[(]\s*(?:dot|\.)\s*[\])]\s*", re.IGNORECASE), "."),
    (re.compile(r"\s+at\s+", re.IGNORECASE), "@"),
    (re.compile(r"\s+dot\s+", re.IGNORECASE), "."),
    (re.compile(r"hxxp", re.IGNORECASE), "http"),
)


def normalize(text: str) -> str:
    """Lower case, defanged forms undone (``[at]``, ``(dot)``, ``hxxp``), whitespace and
    dashes removed: an identifier written with spaces or defanged still matches."""
    for pattern, repl in _DEFANG:
        text = pattern.sub(repl, text)
    return re.sub(r"[\s\-_]+", "", text.lower())


def strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from strings_in(v)


def identifiers_in(text: str) -> dict[str, list[str]]:
    ibans = [m.group(1) or m.group(0) for m in _IBAN.finditer(text)]
    emails = _EMAIL.findall(text)
    urls = [u for u in _URL.findall(text) if "@" not in u and not any(u in e for e in emails)]
    return {"iban": ibans, "email": emails, "url": [u.rstrip(".,") for u in urls]}


def squash(text: str) -> str:
    """``text`` without whitespace: an injected string still matches after YAML folded it."""
    return _SPACE.sub("", text)


_SPACE = re.compile(r"\s+")


def evade(identifier: str) -> str:
    """An identifier written to slip past a text filter: defanged and spaced."""
    if "@" in identifier:
        user, _, domain = identifier.partition("@")
        return f"{user} [at] {domain.replace('.', ' [dot] ')}"
    if "." in identifier:
        return identifier.replace(".", "[.]")
    return " ".join(identifier[i : i + 4] for i in range(0, len(identifier), 4))
