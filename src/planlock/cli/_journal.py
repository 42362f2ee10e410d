"""The journal's commands: show, verify (optionally against anchors), head, anchor; and
``db migrate`` (run by the tables' owner when the application's role may not create them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from planlock.cli import _render
from planlock.cli._app import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    JournalOpt,
    JsonOpt,
    _fail,
    _journal_missing,
    _journal_spec,
    _open_journal,
    app,
    err,
    journal_app,
    out,
)
from planlock.cli._types import PlanlockTyper
from planlock.db import connect, grant_app, migrate, redact
from planlock.errors import UsageError
from planlock.journal import Anchoring, Journal

db_app = PlanlockTyper(
    help="The database's tables (PostgreSQL: as their owner).", no_args_is_help=True
)
app.add_typer(db_app, name="db")


def _existing(journal: str | None) -> Journal:
    path = _journal_spec(journal)
    if _journal_missing(path):
        _fail(EXIT_USAGE, f"no journal at {path}")
    return _open_journal(path)


def _where(journal: str | None) -> str:
    path = _journal_spec(journal)
    return redact(path) if isinstance(path, str) else str(path)


@journal_app.command("show")
def journal_show(
    journal: JournalOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run's events.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the journal's events (all runs, or one)."""
    events = _existing(journal).events(run_id=run)
    if run and not events:
        _fail(EXIT_USAGE, f"no run {run} in {_where(journal)}")
    if as_json:
        print(json.dumps([e.model_dump() for e in events], indent=2))
    else:
        out.print(_render.events_table(events))
        out.print(_render.journal_summary(events))


@journal_app.command("verify")
def journal_verify(
    journal: JournalOpt = None,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="An anchor file (JSON lines of seq and hash kept outside the database): "
            "also detect a truncated tail or a rewritten chain.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the hash chain: exit 0 if intact, 1 if any event was altered (or, with
    --anchor, the tail is missing or the chain was rewritten). With $PLANLOCK_ANCHOR_KEY (or
    $PLANLOCK_ANCHOR_KEY_FILE) set, checkpoint events' MACs are checked too."""
    j = _existing(journal)
    try:
        key = Anchoring.key_from_env()
        report = j.verify(anchor=anchor, key=key) if anchor or key else j.verify()
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    if as_json:
        body = {
            "ok": report.ok,
            "events": report.count,
            "first_bad": report.first_bad,
            "reason": report.reason,
            "checkpoints": report.checkpoints,
            "anchors": report.anchors,
        }
        print(json.dumps(body))
    elif report.ok:
        extra = ""
        if report.checkpoints or anchor:
            extra = f"; {report.checkpoints} checkpoint(s), {report.anchors} anchor(s) match"
        said = f": {report.count} event(s) verified in {_where(journal)}{extra}"
        out.print(Text.assemble(("journal intact", "green"), said))
    else:
        where = f"event {report.first_bad}: " if report.first_bad else ""
        err.print(
            Text.assemble(("journal tampered", "bold red"), f": {where}{report.reason}"),
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)


@journal_app.command("head")
def journal_head(journal: JournalOpt = None, as_json: JsonOpt = False) -> None:
    """Print the last event's seq and hash (with its MAC when $PLANLOCK_ANCHOR_KEY is set). The
    JSON is one anchor: append it to a file kept elsewhere, check with verify --anchor."""
    anchor = _existing(journal).signed_head()
    if as_json:
        print(json.dumps(anchor.to_json(), sort_keys=True))
        return
    out.print(f"head: event {anchor.seq}, hash {anchor.hash}", highlight=False, soft_wrap=True)
    if anchor.mac:
        out.print(f"mac: {anchor.mac} (key {anchor.key_id})", highlight=False, soft_wrap=True)


@journal_app.command("anchor")
def journal_anchor(
    journal: JournalOpt = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Append the anchor here [default: $PLANLOCK_ANCHOR_FILE]."),
    ] = None,
) -> None:
    """Anchor the head now: with a key, record a checkpoint event; append the head to the
    anchor file; print it (one JSON line)."""
    j = _existing(journal)
    try:
        anchor = j.anchor(file)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    print(json.dumps(anchor.to_json(), sort_keys=True))


@db_app.command("migrate")
def db_migrate(
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="The database, as the role that owns the tables "
            "[default: $PLANLOCK_JOURNAL or ./planlock.db].",
        ),
    ] = None,
    grant: Annotated[
        list[str] | None,
        typer.Option(
            "--grant",
            help="PostgreSQL: grant this role what the application needs and no more "
            "(INSERT and SELECT on events). Repeatable.",
        ),
    ] = None,
) -> None:
    """Create or update planlock's tables (named, forward-only migrations); optionally grant an
    application role its privileges on them."""
    spec = _journal_spec(dsn)
    try:
        db = connect(spec)
        try:
            applied = migrate(db)
            for role in grant or []:
                grant_app(db, role)
        finally:
            db.close()
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    except Exception as exc:  # a database error: say it, without a traceback
        _fail(EXIT_USAGE, f"cannot migrate {_where(dsn)}: {exc}")
    where = redact(spec) if isinstance(spec, str) else spec
    done = ", ".join(applied) if applied else "none (up to date)"
    out.print(f"migrations applied to {where}: {done}", highlight=False, soft_wrap=True)
    for role in grant or []:
        out.print(f"granted {role} the application's privileges", highlight=False, soft_wrap=True)
