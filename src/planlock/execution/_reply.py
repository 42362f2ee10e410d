"""The reply to the user, built from what ran: it cannot claim a step that did not run, and it
cannot phish with an attacker's words.

``render_reply(template, plan, result, registry)`` fills an answer template's placeholders
(``{{steps.<id>.output...}}``, ``{{input...}}``) from a ``RunResult``:

- a placeholder naming a step that did not finish renders as ``[not done: step <id> <status>]``,
  never a value; a run that did not succeed opens the reply with its status, the step that
  stopped it (tool and error *kind*, never the error text, which may carry injected words, R9)
  and every step not done (so does a run in which a condition skipped a step), so the
  template's own words ("Invited Dora ...") cannot pass for a report of what happened;
- a value with any untrusted source label (the same labels and trust declarations the policy
  uses: ``ref_sources``, ``trusted_output``, ``trusted_paths``) is *quoted data*: written
  between ``«`` and ``»``, on one line, with every link in it defanged (``quote_untrusted``);
  a reply that quotes anything ends with one line saying what the marks mean;
- trusted values (trusted outputs and fields, inputs, values chosen among them) are written as
  they are, as ``planlock.core.render`` writes them into any string.

Why defanging, not a Markdown code span: a reply is read in a terminal, an email, a chat client
or a web page, and plain-text linkifiers (terminals, mail clients, chat apps) turn
``https://...``, ``www.x.com``, ``x.com`` and ``a@b.com`` into links whatever Markdown says; a
code span protects only where Markdown is rendered, and a backtick in the data can end it.
Defanged text (``hxxps[://]evil[.]com``, ``a@evil[.]com``) is a link nowhere and stays readable:
only schemes, the dots of host names and a few marks change, so names, dates, amounts and ids
read (and match) exactly as the tool gave them. A fact that *is* a link or an address from
untrusted data (a password-reset link read from an email, an invitee's address from an
invitation) no longer matches byte for byte: that is the point. Exact values stay in
``RunResult.outputs`` and the journal; the reply is for reading.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from planlock.core import (
    PLAN_SOURCE,
    Plan,
    Ref,
    Unresolvable,
    render,
    split_interpolation,
    walk_path,
)
from planlock.execution._types import RunResult
from planlock.tools import ToolRegistry
from planlock.validation import Analysis, analyse, label_trust, ref_sources, untrusted_labels

__all__ = ["QUOTE_NOTE", "UNAVAILABLE", "quote_untrusted", "render_reply"]

UNAVAILABLE = "(unavailable)"
"""What a placeholder reads when its step finished but has no value at that path."""
QUOTE_NOTE = "(«…» quotes tool output as data, unchecked; links in it are disabled.)"
"""The last line of a reply that quotes untrusted data."""

_OPEN, _CLOSE = "«", "»"
_SINGLE_OPEN, _SINGLE_CLOSE = "\u2039", "\u203a"
"""The single angle quotation marks that stand in for ``<``, ``>``, ``«`` and ``»`` in data."""
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")
_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61\u2024\ufe52", "."))
"""Dots that IDNA (and so browsers and linkifiers) reads as the dot of a host name: the
ideographic and halfwidth ideographic full stops (UTS 46 separators) and every character whose
NFKC form is a full stop (fullwidth, one dot leader, small full stop)."""
_ANGLES = str.maketrans(
    {"<": _SINGLE_OPEN, ">": _SINGLE_CLOSE, _OPEN: _SINGLE_OPEN, _CLOSE: _SINGLE_CLOSE}
)
"""No HTML tag, autolink (``<https://...>``) or closing quotation mark from the data."""
_WEB_SCHEME = re.compile(r"(?i)\b(?:(h)tt(ps?)|(f)t(ps?))(?=://)")
_BARE_SCHEME = re.compile(r"(?i)\b(mailto|javascript|vbscript|data|file|tel|sms|callto):(?=\S)")
_TOKEN = re.compile(r"[\w.@%+-]+")
"""A run of the characters of host names and email addresses (found in linear time)."""
_TLD = re.compile(r"(?:xn--[\w-]+|[^\W\d_]{2,63})")
"""A top-level domain: letters only (so ``3.14``, ``v1.2`` and ``e.g`` stay as they are)."""
_OCTET = re.compile(r"25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d")
"""A decimal part of an IPv4 address: ``185.199.108.153/login`` is a link to linkifiers that
read bare addresses (and to any person who types it), so a dotted quad is a host name."""
_EDGES = "-_.%+"
_FILE_EXTENSIONS = frozenset(
    (
        *("doc", "docx", "odt", "rtf", "pdf", "txt", "log", "xls", "xlsx", "ods", "csv", "tsv"),
        *("ppt", "pptx", "odp", "json", "yaml", "yml", "xml", "html", "htm"),
        *("png", "jpg", "jpeg", "gif", "svg"),
    )
)
"""Endings of file names that are not top-level domains (no linkifier links ``notes.docx``), so
file names in data stay as they are. Endings that are also TLDs (``.zip``, ``.md``, ``.py``) are
defanged: an attacker can register those."""


def quote_untrusted(text: str) -> str:
    """``text`` as quoted data: ``«...»`` on one line, every link defanged.

    Format characters (zero-width, bidirectional overrides) are removed, so nothing hidden splits
    a host name or reorders the text around the closing mark; dots that IDNA reads as dots become
    dots; line breaks become spaces (no line of the data starts a Markdown block or passes for
    the reply's own paragraph); ``<``, ``>``, ``«`` and ``»`` become single angle quotation marks
    (no HTML tag, no autolink, no early close); schemes are defanged (``https://`` ->
    ``hxxps[://]``, any ``://`` -> ``[://]``, ``mailto:`` -> ``mailto[:]``), and so is every dot
    of a host name, in URLs, bare domains and email addresses (``evil.com`` -> ``evil[.]com``;
    ``notes.docx`` and ``3.14`` stay; so is every dot of a dotted-quad IPv4 address,
    ``1[.]2[.]3[.]4``); ``](`` gets a space (no Markdown link or image). Linear
    time, whatever the text.
    """
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = _LINE_BREAKS.sub(" ", text.translate(_DOTS)).translate(_ANGLES)
    text = _WEB_SCHEME.sub(_defang_scheme, text).replace("://", "[://]")
    text = _BARE_SCHEME.sub(r"\1[:]", text)
    text = _TOKEN.sub(_defang_host, text)
    text = text.replace("](", "] (")  # last: "[://]" or "[:]" before a "(" is a link too
    return f"{_OPEN}{text}{_CLOSE}"


def _defang_scheme(m: re.Match[str]) -> str:
    """``http`` -> ``hxxp``, ``ftps`` -> ``fxps`` (the ``://`` after it is replaced anyway)."""
    h, hs, f, fs = m.groups()
    return f"{h}xx{hs}" if h else f"{f}x{fs}"


def _defang_host(m: re.Match[str]) -> str:
    """The dots of every host name in a token: a bare domain, an email address's domain, and
    whatever looks like a host before an ``@`` (a local part ``evil.com@`` could still be linked
    as ``evil.com``)."""
    return "@".join(_defanged(p) for p in m.group(0).split("@"))


def _host_core(piece: str) -> str | None:
    """The host name in ``piece`` (its punctuation edges aside), or None when it is none. Any
    label after the first that could be a top-level domain makes it one (a linkifier may stop
    there: ``a.io.x`` holds ``a.io``), unless that label is a file name's ending; so does being a
    dotted-quad IPv4 address (``10.0.0.1``; ``1.2.3`` and ``1.2.3.456`` are not)."""
    core = piece.strip(_EDGES)
    labels = core.split(".")
    if len(labels) == 4 and all(_OCTET.fullmatch(label) for label in labels):
        return core
    for label in labels[1:]:
        if _TLD.fullmatch(label) and label.lower() not in _FILE_EXTENSIONS:
            return core
    return None


def _defanged(piece: str) -> str:
    core = _host_core(piece)
    if core is None:
        return piece
    start = piece.index(core)
    end = start + len(core)
    return f"{piece[:start]}{core.replace('.', '[.]')}{piece[end:]}"


def render_reply(
    template: str | None,
    plan: Plan,
    result: RunResult,
    registry: ToolRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
) -> str:
    """The reply for ``result``, a run of ``plan`` with ``registry``: ``template`` filled from
    executed results only (None: a list of the steps that ran), after a status line when the run
    did not succeed or a step did not run. Untrusted values are quoted and defanged
    (``quote_untrusted``); placeholders of steps that did not finish read ``[not done: ...]``;
    ``inputs`` are the run's trusted inputs (for ``{{input...}}`` placeholders).

    Trust is judged on ``plan``: if the result is of another plan (a revision during the run),
    only the plan's literals and the inputs are trusted.
    """
    analysis = analyse(plan, registry)
    same_plan = not result.plan_hash or result.plan_hash == plan.hash
    is_trusted: Callable[[str], bool] = label_trust(analysis)[0]

    def trusted(label: str) -> bool:
        return (same_plan or label == PLAN_SOURCE or label.startswith("input:")) and is_trusted(
            label
        )

    names = {s.id: s.tool for s in plan.steps} if same_plan else {}
    quoted = False
    parts: list[str] = []
    for part in split_interpolation(template) if template is not None else []:
        if not isinstance(part, Ref):
            parts.append(part)
            continue
        text, untrusted = _placeholder(part, analysis, result, inputs, trusted)
        quoted = quoted or untrusted
        parts.append(quote_untrusted(text) if untrusted else text)
    body = "".join(parts) if template is not None else _done_line(result, names)
    reply = _status_line(result, names) + body
    return f"{reply}\n\n{QUOTE_NOTE}" if quoted else reply


def _placeholder(
    ref: Ref,
    analysis: Analysis,
    result: RunResult,
    inputs: Mapping[str, Any] | None,
    trusted: Callable[[str], bool],
) -> tuple[str, bool]:
    """What a placeholder reads, and whether that is untrusted data."""
    if ref.source == "input":
        if inputs is None or ref.name not in inputs:
            return UNAVAILABLE, False
        with contextlib.suppress(Unresolvable):
            return render(walk_path(inputs[ref.name], ref.path, ref.name)), False
        return UNAVAILABLE, False
    if ref.source != "step":
        return UNAVAILABLE, False
    sid = ref.name
    if result.statuses.get(sid) != "finished" or sid not in result.outputs:
        return f"[not done: step {sid} {_status_words(result.statuses.get(sid))}]", False
    try:
        value = walk_path(result.outputs[sid], ref.path, f"steps.{sid}.output")
    except Unresolvable:
        return UNAVAILABLE, False
    general = frozenset(result.provenance.get(sid, (f"step:{sid}",)))
    labels = ref_sources(analysis.steps, sid, ref.path, general)
    return render(value), bool(untrusted_labels(labels, trusted))


def _status_words(status: str | None) -> str:
    return {
        "failed": "failed",
        "skipped": "was skipped",
        "pending": "has not run yet",
    }.get(status or "", "did not run")


def _steps(sids: list[str], names: Mapping[str, str]) -> str:
    return ", ".join(f"{sid} ({names[sid]})" if sid in names else sid for sid in sids)


def _status_line(result: RunResult, names: Mapping[str, str]) -> str:
    """The reply's first paragraph: how the run ended when it did not succeed, and every step
    not done (in a run that succeeded: the steps the plan's conditions skipped). Empty when
    every step finished."""
    not_done = [sid for sid, st in result.statuses.items() if st != "finished"]
    tail = "did not happen"
    if result.status == "paused":
        after = _steps([result.paused_at or "?"], names)
        head, tail = f"Not completed: the run paused after step {after}. ", "has not happened"
    elif result.status == "failed":
        stopped = result.failed_step or "?"
        kind = f": {result.error_kind}" if result.error_kind else ""
        head = f"Not completed: the run failed at step {_steps([stopped], names)}{kind}. "
    elif not_done:
        head = "Done, except the steps the plan's conditions skipped. "
    else:
        return ""
    listed = _steps(not_done, names) or "none"
    return f"{head}Not done: step(s) {listed}; anything below about them {tail}.\n\n"


def _done_line(result: RunResult, names: Mapping[str, str]) -> str:
    done = [sid for sid, st in result.statuses.items() if st == "finished"]
    return f"Done: step(s) {_steps(done, names) or 'none'}."
