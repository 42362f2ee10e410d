"""``planlock endorse add|list|revoke``: values a person vouches for once (saved payees, known
contacts), kept beside the journal. Thin: every command calls ``planlock.approval``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from planlock.approval import (
    Endorsement,
    endorse,
    revoke_endorsement,
)
from planlock.cli._app import (
    EXIT_USAGE,
    JournalOpt,
    JsonOpt,
    _endorsements,
    _fail,
    _open_journal,
    app,
    out,
)
from planlock.cli._types import PlanlockTyper
from planlock.errors import UsageError
from planlock.queue import parse_duration

endorse_app = PlanlockTyper(
    help="Endorse a value once (a saved payee, a known contact): it then reaches sensitive "
    "parameters without asking, when it comes from the same source.",
    no_args_is_help=True,
)
app.add_typer(endorse_app, name="endorse")

AsOpt = Annotated[str, typer.Option("--as", help="Who endorses or revokes (journaled).")]


def _show(e: Endorsement) -> str:
    target = e.target or "any sensitive parameter"
    return f"{e.id} {e.label!r}: {e.source} -> {target}, by {e.by}"


@endorse_app.command("add")
def add_cmd(
    value: Annotated[str, typer.Argument(help="The value, as text (or JSON with --json-value).")],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="Where the value comes from: tool:NAME[#PATH] (e.g. "
            "'tool:get_transactions#[*].recipient'), as an approval request shows it.",
        ),
    ],
    label: Annotated[str, typer.Option("--label", help="What the value is: landlord, Sarah.")],
    by: AsOpt,
    target: Annotated[
        str | None,
        typer.Option("--target", help="TOOL.PARAM it may reach [default: any sensitive one]."),
    ] = None,
    json_value: Annotated[
        bool, typer.Option("--json-value", help="Read VALUE as JSON (a number, an object...).")
    ] = False,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lapses after this long (90d, 12h).")
    ] = None,
    journal: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Endorse VALUE from SOURCE as LABEL; journaled as ``endorsement_added``."""
    parsed: object = value
    if json_value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            _fail(EXIT_USAGE, f"VALUE is not JSON ({exc})")
    j = _open_journal(journal)
    try:
        expires_at = None
        if expires_in:
            expires_at = (datetime.now(UTC) + parse_duration(expires_in)).isoformat()
        made = endorse(
            _endorsements(j),
            parsed,
            source=source,
            label=label,
            by=by,
            target=target,
            expires_at=expires_at,
            via="cli",
            journal=j,
        )
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    if as_json:
        print(json.dumps(made.to_json(), indent=2))
    else:
        out.print(Text(f"endorsed {_show(made)}"))


@endorse_app.command("list")
def list_cmd(
    include_revoked: Annotated[
        bool, typer.Option("--all", help="Also revoked and expired ones.")
    ] = False,
    journal: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List endorsements, oldest first (live ones unless --all)."""
    items = _endorsements(_open_journal(journal)).list(include_revoked=include_revoked)
    if as_json:
        print(json.dumps([e.to_json() for e in items], indent=2))
        return
    table = Table(title=f"Endorsements ({len(items)})", title_justify="left")
    for col in ("id", "label", "source", "target", "value hash", "by", "at", "state"):
        table.add_column(col)
    for e in items:
        state = "revoked" if e.revoked_at else ("live" if e.live() else "expired")
        table.add_row(
            e.id,
            Text(e.label),
            Text(e.source),
            Text(e.target or "any sensitive"),
            e.value_hash[:16],
            Text(e.by),
            e.at[:19],
            state,
        )
    out.print(table)


@endorse_app.command("revoke")
def revoke_cmd(
    endorsement_id: Annotated[str, typer.Argument(help="The endorsement's id.")],
    by: AsOpt,
    journal: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an endorsement: from now on its value asks again. Journaled."""
    j = _open_journal(journal)
    try:
        revoked = revoke_endorsement(_endorsements(j), endorsement_id, by=by, journal=j)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    if as_json:
        print(json.dumps(revoked.to_json(), indent=2))
    else:
        out.print(Text(f"revoked {_show(revoked)}"))
