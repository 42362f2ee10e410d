"""Submitting to, answering, running and adopting durable runs (the DBOS engine's front half).

``DurableClient`` works from any process (it talks to the system database through
``DBOSClient``): it submits runs, answers approval requests and hands decided requests to DBOS:
an approved plan is enqueued on the ``planlock-runs`` queue (workflow id = run id, so a second
hand-over is a no-op); a call or resume answer is enqueued as the request's answer workflow
(``<request id>.answer`` on ``planlock-answers``), which publishes it with ``DBOS.set_event`` for
the run waiting on ``DBOS.get_event``; requests past their time are expired.

``DurableWorker`` is one worker process: a DBOS executor with a stable id that dequeues runs,
recovers its own runs on restart, relays answers given with the plain ``planlock approve/deny``,
keeps a liveness lease (its heartbeat), and can adopt a dead worker's runs (never a live one's).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig, DBOSPortableJSONSerializer, EnqueueOptions

from planlock.agent import noter, prepare
from planlock.approval import Decision, EndorseAs, PlanGate
from planlock.core import Plan, iso_ms
from planlock.durable._state import DurableState, StoredApproval
from planlock.durable._workflow import (
    ANSWER_QUEUE,
    ANSWER_WORKFLOW,
    APP_NAME,
    APP_VERSION,
    QUEUE_NAME,
    WORKFLOW_NAME,
    WorkerContext,
    answer_workflow_id,
    install,
)
from planlock.errors import UsageError
from planlock.journal import Journal
from planlock.policy import Policy
from planlock.queue import DEFAULT_EXPIRY, ApprovalQueue, Notifier, Submitted, notify_request
from planlock.tools import ToolRegistry

__all__ = [
    "DurableClient",
    "DurableWorker",
    "dbos_config",
    "system_database_url",
    "system_schema",
]

_PAYLOAD = ("run_id", "plan", "plan_hash", "inputs", "policy", "expires_in", "max_replans")
"""What a run's workflow gets (with the plan grant) from its stored row."""

AUTO_REASON = "nothing needs a person"
"""The reason of the policy's grant for a durable run with nothing that needs a person (the
approval queue and in-process runs say ``planlock.approval.AUTO_REASON``)."""


def system_database_url(db: str | None, journal_path: Path | None = None) -> str:
    """The DBOS system database: a PostgreSQL DSN, an SQLite URL, or a file path (SQLite).
    Default: ``$PLANLOCK_DBOS_DB``, else ``<journal>.dbos.sqlite`` beside the journal."""
    db = db or os.environ.get("PLANLOCK_DBOS_DB")
    if not db:
        base = journal_path or Path(os.environ.get("PLANLOCK_JOURNAL", "planlock.db"))
        return f"sqlite:///{base.resolve().with_suffix('.dbos.sqlite')}"
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).resolve()}"


def system_schema() -> str:
    """The schema of DBOS's tables in PostgreSQL: ``$PLANLOCK_DBOS_SCHEMA``, else ``dbos``."""
    return os.environ.get("PLANLOCK_DBOS_SCHEMA", "dbos")


def dbos_config(url: str, executor_id: str) -> DBOSConfig:
    return {
        "name": APP_NAME,
        "system_database_url": url,
        "application_version": APP_VERSION,
        "executor_id": executor_id,
        "serializer": DBOSPortableJSONSerializer(),
        "dbos_system_schema": system_schema(),
        "log_level": os.environ.get("PLANLOCK_DBOS_LOG_LEVEL", "WARNING"),
        "notification_listener_polling_interval_sec": 0.02,
        "notification_coalesce_sec": 0.005,
    }


class DurableClient:
    """Submit durable runs and answer their requests, from any process."""

    def __init__(self, journal: Journal, db_url: str, notifier: Notifier | None = None) -> None:
        self.journal = journal
        self.db_url = db_url
        self.notifier = notifier
        """Told about each plan request that waits for a person (as the approval queue's)."""
        self.state = DurableState(journal)
        self._client: DBOSClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> DBOSClient:
        with self._lock:
            if self._client is None:
                # A client may come before any worker ever launched: create the tables.
                DBOS.migrate(self.db_url, schema=system_schema())
                self._client = DBOSClient(
                    system_database_url=self.db_url,
                    dbos_system_schema=system_schema(),
                    serializer=DBOSPortableJSONSerializer(),
                    application_name=APP_NAME,
                )
            return self._client

    async def submit(
        self,
        plan: Plan,
        registry: ToolRegistry,
        *,
        inputs: dict[str, Any] | None = None,
        policy: Policy | None = None,
        by: str = "cli",
        expires_in: timedelta = DEFAULT_EXPIRY,
        max_replans: int = 2,
    ) -> Submitted:
        """Validate and assess now (raises PlanInvalid / ApprovalDenied); store the run and, when
        the policy needs no person, enqueue it at once. The plan request, and each request the
        run makes while it executes, waits ``expires_in`` for an answer, then expires. On a
        worker with a replanner the run may be revised ``max_replans`` times (0: never)."""
        policy = policy or Policy()
        prepared = await prepare(plan, registry, self.journal, inputs=inputs, policy=policy)
        gate = PlanGate.of(
            prepared.plan_request(f"{prepared.run_id}.plan"), auto_reason=AUTO_REASON
        )
        request, grant = gate.request, gate.decision
        approval_id, needs = request.id, gate.needs_person
        payload = {
            "run_id": prepared.run_id,
            "plan": plan.canonical(),
            "plan_hash": plan.hash,
            "inputs": prepared.inputs,
            "policy": policy.model_dump(mode="json"),
            "expires_in": expires_in.total_seconds(),
            "max_replans": max_replans,
        }
        status = "pending_approval" if needs else "approved"
        expires_at = iso_ms(datetime.now(UTC) + expires_in)
        self.state.add_run(payload, approval_id, status, by)
        self.state.add_approval(
            approval_id,
            prepared.run_id,
            "plan",
            plan.hash,
            request.to_json(),
            expires_at=expires_at,
            decided=grant,
        )
        note = noter(self.journal, prepared.run_id)
        gate.open(note, expires_at=expires_at)
        note(
            "run_queued", {"status": status, "approval_id": approval_id, "by": by, "engine": "dbos"}
        )
        if grant is not None:
            self.deliver_pending()
        elif self.notifier is not None:
            notify_request(self.notifier, self.journal, prepared.run_id, request.to_json())
        return Submitted(prepared.run_id, status, approval_id if needs else None)

    def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str = "",
        via: str = "cli",
        endorse: EndorseAs | None = None,
    ) -> Decision:
        """Answer a pending request (journaled, single use) and hand it to DBOS now; with
        ``endorse``, approving a call also endorses its values (as the approval queue does)."""
        decision = ApprovalQueue(self.journal).decide(
            approval_id, approve=approve, by=by, reason=reason, via=via, endorse=endorse
        )
        self.deliver_pending()
        return decision

    def deliver_pending(self) -> int:
        """Expire the requests past their time, then hand every decided, undelivered request of
        a durable run to DBOS; how many."""
        self.state.expire()
        items = self.state.undelivered()
        for item in items:
            self._deliver(item)
        return len(items)

    def _deliver(self, item: StoredApproval) -> None:
        if item.kind == "plan":
            if item.decision.approved:
                run = self.state.run(item.run_id)
                assert run is not None
                keys = (
                    "run_id",
                    "plan",
                    "plan_hash",
                    "inputs",
                    "policy",
                    "expires_in",
                    "max_replans",
                )
                payload = {k: run[k] for k in keys}
                payload |= {"approval_id": item.id, "grant": item.decision.to_json()}
                options: EnqueueOptions = {
                    "queue_name": QUEUE_NAME,
                    "workflow_name": WORKFLOW_NAME,
                    "workflow_id": item.run_id,
                    "app_version": APP_VERSION,
                }
                self.client.enqueue(options, payload)
                self.state.set_status(item.run_id, "queued")
            else:
                self.state.set_status(item.run_id, item.status)  # denied or expired
        elif item.status != "expired":  # an expired call request: the waiting run sees it
            answer: EnqueueOptions = {
                "queue_name": ANSWER_QUEUE,
                "workflow_name": ANSWER_WORKFLOW,
                "workflow_id": answer_workflow_id(item.id),  # a second hand-over is a no-op
                "app_version": APP_VERSION,
            }
            self.client.enqueue(answer, item.decision.to_json())
        self.state.mark_delivered(item.id)

    def adopt(self, dead: Sequence[str]) -> list[str]:
        """Hand the unfinished runs of dead workers (by executor id) back to the queue, where any
        live worker takes them; the runs resume from their last recorded step.

        Refuses (UsageError, nothing adopted) when any of them is alive: its liveness lease
        (``durable_workers``, renewed by its heartbeat) is running. Adopting a live worker's runs
        would let two workers execute one run at once."""
        adopted: list[str] = []
        with self.state.adopting(dead) as alive:  # a second adopt waits: none resumes a run twice
            if alive:
                who = "; ".join(
                    f"{w.worker_id} (pid {w.pid} on {w.host}, last heartbeat {w.heartbeat_at}, "
                    f"lease until {w.lease_until})"
                    for w in alive
                )
                raise UsageError(
                    f"worker(s) still alive: {who}. Adopt only a worker that is gone: stop it, "
                    "or wait until its lease ends"
                )
            for executor in dead:
                adopted.extend(w for w in self._pending(executor) if self._hand_back(w, executor))
        return adopted

    def _pending(self, executor: str) -> list[str]:
        """The unfinished workflows (runs, answers) DBOS holds for ``executor``."""
        found = self.client.list_workflows(
            status="PENDING",
            executor_id=executor,
            app_version=APP_VERSION,
            load_input=False,
            load_output=False,
        )
        return [w.workflow_id for w in found]

    def _hand_back(self, workflow_id: str, executor: str) -> bool:
        """Put one of a dead executor's workflows back on its queue (``resume_workflow``), if it
        is still that executor's and unfinished: a live worker that took it since then (its
        executor id is on it now) keeps it."""
        found = self.client.list_workflows(
            workflow_ids=[workflow_id], load_input=False, load_output=False
        )
        if not found or found[0].status != "PENDING" or found[0].executor_id != executor:
            return False
        self.client.resume_workflow(workflow_id, queue_name=found[0].queue_name)
        return True

    def result(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for a run's workflow to finish and return its summary."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.client.retrieve_workflow(run_id).get_status()
            if status.status in ("SUCCESS", "ERROR", "CANCELLED"):
                return dict(status.output or {"status": status.status.lower()})
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {status.status}")
            time.sleep(0.05)

    def close(self) -> None:
        if self._client is not None:
            self._client.destroy()
        self.state.close()


QUEUE_POLL = 0.05
"""Seconds between a worker's checks of a DBOS queue (a run starts about this soon)."""


class DurableWorker:
    """One worker process on the DBOS engine (``planlock worker --engine dbos``)."""

    def __init__(
        self,
        context: WorkerContext,
        *,
        db_url: str,
        executor_id: str,
        worker_concurrency: int | None = None,
        lease: timedelta = timedelta(seconds=30),
        heartbeat: timedelta = timedelta(seconds=10),
        poll: float | None = None,
    ) -> None:
        if not timedelta(0) < heartbeat < lease:
            msg = f"the heartbeat ({heartbeat}) must be shorter than the lease ({lease})"
            raise UsageError(msg)
        if poll is not None and not poll > 0:
            raise UsageError(f"the queue's polling interval must be positive, not {poll}")
        self.poll = poll
        """Seconds between this worker's checks of the DBOS queues; None: the queue's (or
        ``QUEUE_POLL`` for a new queue). DBOS keeps it with the queue, as the limit."""
        self.context = context
        self.db_url = db_url
        self.executor_id = executor_id
        self.worker_concurrency = worker_concurrency
        self.lease = lease
        self.heartbeat = heartbeat
        self.client = DurableClient(context.journal, db_url)
        self._launched = False
        self._beating = threading.Event()
        self._beater: threading.Thread | None = None

    def join(self) -> None:
        """Join the queue's workers (``_join``: refused with ``UsageError`` when this worker's
        limit differs from the live workers'), taking this worker's liveness lease and keeping
        it with a heartbeat thread. ``start`` joins first if this was not called."""
        if self._beater is not None:
            return
        self._join()
        self._beater = threading.Thread(
            target=self._beat, name=f"planlock-heartbeat-{self.executor_id}", daemon=True
        )
        self._beater.start()

    def start(self, adopt: Sequence[str] = ()) -> list[str]:
        """Join the queue's workers (``join``); launch DBOS (which recovers this executor's
        unfinished runs), listen to the queue, and adopt the runs of the dead executors named in
        ``adopt``."""
        self.join()
        install(self.context)
        DBOS(config=dbos_config(self.db_url, self.executor_id))
        DBOS.launch()
        self._launched = True  # it polls the queues as `_join` stored them
        return self.client.adopt(adopt) if adopt else []

    def _join(self) -> None:
        """Store the queues' settings and start this worker's lease, one worker at a time.

        DBOS keeps a queue's settings with the queue, and each worker of it reloads them at
        every poll: its per-worker limit (``worker_concurrency``) and its polling interval are
        the same for all the workers of the queue. A worker whose limit, or whose given
        ``poll``, differs from the queue's while another worker is live is refused: storing
        it would change that worker's. A worker given no ``poll`` takes the queue's."""
        with self.context.state.joining(self.executor_id, self.lease) as others:
            client = self.client.client
            queue = client.retrieve_queue(QUEUE_NAME)
            if self.poll is None:
                self.poll = QUEUE_POLL if queue is None else queue.polling_interval_sec
            poll = self.poll
            if others and queue is not None:
                names = ", ".join(w.worker_id for w in others)
                _same_settings(self.executor_id, names, queue, self.worker_concurrency, poll)
            client.register_queue(
                QUEUE_NAME,
                worker_concurrency=self.worker_concurrency,
                polling_interval_sec=poll,
                on_conflict="always_update",
            )
            client.register_queue(
                ANSWER_QUEUE, polling_interval_sec=poll, on_conflict="always_update"
            )

    def serve(
        self,
        *,
        stop: threading.Event | None = None,
        idle_exit: float | None = None,
        poll: float = 0.1,
    ) -> None:
        """Relay answers to DBOS until ``stop`` is set, or until no durable run is unfinished
        for ``idle_exit`` seconds.

        ``stop`` may be set by a signal handler, which runs in this thread: so this only reads
        it and sleeps, and never waits on it. ``Event.wait`` holds the event's lock for a moment
        at each call, and a SIGTERM handled in that moment blocked for ever in ``Event.set``
        (seen: a ``planlock worker --engine dbos`` that never stopped)."""
        stop = stop or threading.Event()
        idle_since = time.monotonic()
        while not stop.is_set():
            self.client.deliver_pending()
            if idle_exit is not None:
                if self.context.state.pending_count():
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_exit:
                    return
            time.sleep(poll)

    def _beat(self) -> None:
        while not self._beating.wait(self.heartbeat.total_seconds()):
            try:
                self.context.state.beat(self.executor_id, self.lease)
            except Exception:  # noqa: S112 (a missed beat is retried; the lease covers it)
                continue

    def close(self) -> None:
        if self._beating.is_set():
            return  # closed before
        self._beating.set()
        if self._beater is not None:
            self._beater.join(timeout=5)
            self._beater = None
            self.context.state.stopped(self.executor_id)
        if self._launched:
            DBOS.destroy(workflow_completion_timeout_sec=0)
            self._launched = False
        self.client.close()


def _same_settings(worker: str, live: str, queue: Any, limit: int | None, poll: float) -> None:
    """Refuse (``UsageError``) a worker whose settings differ from the queue's (``live``: the
    queue's live workers)."""
    held = queue.worker_concurrency
    if held != limit:
        took = "any number of runs" if held is None else f"at most {held} run(s)"
        same = (
            "worker without --concurrency"
            if held is None
            else f"worker --concurrency {held}, serve --workers {held}"
        )
        msg = (
            f"worker {worker}: the live workers of the queue ({live}) each take {took} at a "
            "time, and DBOS keeps that limit with the queue, the same for all its workers: give "
            f"this one the same limit ({same}), or stop them first"
        )
        raise UsageError(msg)
    interval = queue.polling_interval_sec
    if poll != interval:
        msg = (
            f"worker {worker}: the live workers of the queue ({live}) check it every "
            f"{interval:g} s, and DBOS keeps that with the queue, the same for all its workers: "
            f"give this one --poll {interval:g} (or no --poll), or stop them first"
        )
        raise UsageError(msg)
