"""Runs AgentDojo pairs through planlock (or the ReAct baseline) and scores them.

For every (user task, injection task) pair this does what AgentDojo's own
``run_task_with_injection_tasks`` does: build the attack's injections, run the task with the
pipeline through ``TaskSuite.run_task_with_pipeline`` inside a ``TraceLogger`` (AgentDojo's
checks decide utility and security, and ``security == True`` means the *attack succeeded*),
and adds what AgentDojo does not measure: our strict check, the approvals the policy asked
for, and the time. Environments are parsed with libyaml's C loader when it is available
(``fast_yaml``); a test checks that the environments are identical either way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planlock.approval import EndorsementStore, MemoryEndorsements
from planlock.bench.agentdojo._attack import PLANLOCK_ATTACKS
from planlock.bench.agentdojo._attack_base import PlanlockAttack, Want, final_reply
from planlock.bench.agentdojo._checks import (
    AttackInfo,
    attack_info,
    context_tainted_effects,
    strict_violations,
    tainted_effects,
    unasked_effects,
)
from planlock.bench.agentdojo._llm import OracleLLM
from planlock.bench.agentdojo._person import ask_summary
from planlock.bench.agentdojo._suite import (
    ApproveMode,
    PlanlockElement,
    PlanSource,
    SuiteSpec,
    load_suite,
    load_suite_spec,
)
from planlock.bench.agentdojo._taint import tainted_steps
from planlock.bench.agentdojo._watch import StepWatch
from planlock.bench.agentdojo._worst import WorstCaseLLM
from planlock.bench.agentdojo._yaml import fast_yaml
from planlock.errors import UsageError
from planlock.llm import LLM, load_model

if TYPE_CHECKING:
    from planlock.bench.agentdojo._baseline import ReactBaseline

__all__ = [
    "ATTACKS",
    "BaselineAgent",
    "PairResult",
    "PlanlockAgent",
    "StepLLMMode",
    "fast_yaml",
    "make_element",
    "run_pairs",
]

ATTACKS: tuple[str, ...] = (
    "important_instructions",
    "tool_knowledge",
    "direct",
    "ignore_previous",
    "injecagent",
    "system_message",
    *PLANLOCK_ATTACKS,
)
"""AgentDojo's six attacks, then ours (``_attack``: written against planlock)."""
StepLLMMode = Literal["oracle", "local", "worst"]
ATTACK_TARGET_NAME = "local"
"""AgentDojo's attacks address the model by the name found in the pipeline's name (its
``MODEL_NAMES``); ours is not a listed model, so attacks are built against a stand-in named
``local`` ("Local model"). The worst-case in-step model obeys whatever the wording."""


@dataclass
class PairResult:
    """One run: a user task, with or without an injection task under an attack."""

    agent: str
    suite: str
    user_task: str
    injection_task: str | None
    attack: str | None
    utility: bool
    attack_success: bool
    """AgentDojo's own security check (True: the injection task's goal was reached)."""
    strict: list[str] = field(default_factory=list)
    """Side-effecting calls that carried an attacker identifier (our stricter check)."""
    approvals: int = 0
    """Requests to a person (plan or call) in this run."""
    status: str = ""
    hijacked: int = 0
    """Quarantined-step answers the worst-case model gave the attacker."""
    seconds: float = 0.0
    tainted_effects: list[str] = field(default_factory=list)
    """The enforcement check: side-effecting calls that depend on injected text (provenance)
    and ran without a person's approval."""
    unasked_effects: list[str] = field(default_factory=list)
    """Side-effecting calls whose amount or target the user task's ground truth does not name."""
    runs: int = 1
    """Runs of this pair: the worst case re-runs it once per combination of its choices."""
    capped: bool = False
    """The bound on re-runs left some combinations of the worst case's choices untried."""
    untried: int = 0
    """Allowed values of the worst case's choices that no run took (only when capped)."""
    person: str = ""
    """Who answered requests: ``deny`` (nobody), ``all`` (approves each), ``endorse``."""
    endorsements: int = 0
    """Of ``approvals``: the requests the person answered by endorsing values."""
    asks: list[str] = field(default_factory=list)
    """What each request was about: its kind and reason keys (``call flow:recipient``)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Target:
    name: str


def make_element(
    suite_name: str,
    planner: PlanSource,
    step_llm: StepLLMMode,
    *,
    approve: ApproveMode = "deny",
    honest: LLM | None = None,
    endorsements: EndorsementStore | None = None,
) -> tuple[PlanlockElement, WorstCaseLLM | None]:
    """A planlock pipeline element for a suite, with the in-step LLM ``step_llm``.

    ``worst`` wraps an honest model (``honest``, default the oracle) that answers every step
    whose input holds no injected text. An endorsing person (``approve="endorse"``) keeps its
    endorsements in ``endorsements`` (default: a new store) across the element's queries.
    """
    from planlock.bench.agentdojo._corpus import load_oracle  # noqa: PLC0415

    watch = StepWatch()
    spec = load_suite_spec(suite_name)
    suite = load_suite(suite_name)
    oracle = OracleLLM(load_oracle(suite_name), watch)
    llm: LLM
    worst: WorstCaseLLM | None = None
    if step_llm == "oracle":
        llm = oracle
    elif step_llm == "local":
        llm = load_model("local")
    elif step_llm == "worst":
        worst = WorstCaseLLM(honest or oracle, watch)
        llm = worst
    else:
        raise UsageError(f"--step-llm must be oracle, local or worst, not {step_llm!r}")
    if approve == "endorse" and endorsements is None:
        endorsements = MemoryEndorsements()
    element = PlanlockElement(
        suite, spec, planner, llm, approve=approve, watch=watch, endorsements=endorsements
    )
    return element, worst


def _read_only(spec: SuiteSpec) -> frozenset[str]:
    return frozenset(n for n, t in spec.tools.items() if t.effect == "read")


def _calls(messages: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for m in messages:
        if m["role"] == "assistant":
            out.extend((c.function, dict(c.args)) for c in m.get("tool_calls") or [])
    return out


class Agent:
    """What the runner needs from an agent (planlock's element or the baseline)."""

    name: str
    element: Any

    def prepare(self, user_task: Any, injection_task: Any, info: AttackInfo | None) -> None:
        """Called before each pair."""

    def approvals(self) -> int:
        return 0

    def asked(self) -> list[dict[str, Any]]:
        """The requests to a person in the last run (``BenchApprover.asked``)."""
        return []

    def person(self) -> str:
        return ""

    def status(self) -> str:
        return ""

    def hijacked(self) -> int:
        return 0

    def messages(self) -> Sequence[Any]:
        return []

    def again(self) -> bool:
        """After a run of a pair: whether to run it again (another choice of the worst case)."""
        return False

    def runs(self) -> tuple[int, bool, int]:
        """Runs made of the current pair, whether the bound on them was hit, and how many
        allowed values of the worst case's choices no run took."""
        return 1, False, 0

    def tainted_effects(self, info: AttackInfo, read_only: frozenset[str]) -> list[str]:
        """The enforcement check on the last run. An agent without provenance: every
        side-effecting call after its model read injected text."""
        return context_tainted_effects(self.messages(), info.needles, read_only)


class PlanlockAgent(Agent):
    """planlock's pipeline element."""

    def __init__(self, element: PlanlockElement, worst: WorstCaseLLM | None) -> None:
        self.element: PlanlockElement = element
        self.worst = worst
        self.name = element.name

    def prepare(
        self,
        user_task: Any,  # noqa: ARG002  (the worst case needs only the attack)
        injection_task: Any,  # noqa: ARG002
        info: AttackInfo | None,
    ) -> None:
        if self.worst is not None:
            self.worst.attack = info
            self.worst.hijacked = 0
            self.worst.choices.reset()

    def again(self) -> bool:
        if self.worst is None or self.worst.attack is None or not self.worst.choices.again():
            return False
        self.worst.hijacked = 0
        return True

    def runs(self) -> tuple[int, bool, int]:
        if self.worst is None:
            return 1, False, 0
        choices = self.worst.choices
        return choices.runs, choices.capped, choices.untried

    def tainted_effects(self, info: AttackInfo, read_only: frozenset[str]) -> list[str]:  # noqa: ARG002
        watch = self.element.watch
        effects = {n: t.effect for n, t in self.element.tools.spec.tools.items()}
        return tainted_effects(
            watch.calls,
            tainted_steps(watch.calls, watch.outputs, info.needles),
            effects,
            approved=watch.approved,
            endorsed=watch.endorsed,
            plan_approved=watch.plan_approved,
        )

    def approvals(self) -> int:
        return len(self.element.last.approvals)

    def asked(self) -> list[dict[str, Any]]:
        return self.element.last.approvals

    def person(self) -> str:
        return self.element.approve

    def status(self) -> str:
        return self.element.last.status

    def hijacked(self) -> int:
        return self.worst.hijacked if self.worst is not None else 0

    def messages(self) -> Sequence[Any]:
        return self.element.last.messages


class BaselineAgent(Agent):
    """The ReAct baseline with the scripted worst-case model."""

    def __init__(self, suite_name: str) -> None:
        from planlock.bench.agentdojo._baseline import ReactBaseline  # noqa: PLC0415

        self.element: ReactBaseline = ReactBaseline(
            load_suite(suite_name), load_suite_spec(suite_name)
        )
        self.name = self.element.name

    def prepare(self, user_task: Any, injection_task: Any, info: AttackInfo | None) -> None:
        self.element.user_task = user_task
        self.element.injection_task = injection_task
        self.element.model.attack = info
        self.element.model.hijacked = 0

    def status(self) -> str:
        return "react"

    def hijacked(self) -> int:
        return self.element.model.hijacked

    def messages(self) -> Sequence[Any]:
        return self.element.last_messages


def run_pairs(
    agent: Agent,
    suite_name: str,
    attack_name: str | None,
    *,
    user_tasks: Sequence[str] | None = None,
    injection_tasks: Sequence[str] | None = None,
    logdir: Path | None = None,
    on_result: Callable[[PairResult], None] | None = None,
) -> list[PairResult]:
    """Run every selected pair of a suite (``attack_name`` None: each user task once, benign)."""
    from agentdojo.attacks.attack_registry import load_attack  # noqa: PLC0415
    from agentdojo.logging import OutputLogger, TraceLogger  # noqa: PLC0415

    suite = load_suite(suite_name)
    spec = load_suite_spec(suite_name)
    read_only = _read_only(spec)
    tasks = [suite.get_user_task_by_id(t) for t in user_tasks] if user_tasks else None
    tasks = tasks or sorted(suite.user_tasks.values(), key=lambda t: _num(t.ID))
    injections_all = suite.injection_tasks
    inj_ids = list(injection_tasks or sorted(injections_all, key=_num))
    results: list[PairResult] = []
    with fast_yaml():
        attack = (
            load_attack(attack_name, suite, _Target(ATTACK_TARGET_NAME)) if attack_name else None
        )
        base_env = suite.load_and_inject_default_environment({})
        delegate: Any = OutputLogger(str(logdir)) if logdir else contextlib.nullcontext()
        with delegate:
            for user_task in tasks:
                user_calls = user_task.ground_truth(base_env.model_copy(deep=True))
                pairs: list[str | None] = list(inj_ids) if attack is not None else [None]
                for inj_id in pairs:
                    inj = injections_all[inj_id] if inj_id else None
                    injections: dict[str, str] = (
                        attack.attack(user_task, inj) if attack and inj else {}
                    )
                    info: AttackInfo | None = None
                    want: Want | None = None
                    if inj is not None:
                        if isinstance(attack, PlanlockAttack):
                            want = attack.want(user_task, inj)
                        info = attack_info(
                            want.goal if want else inj.GOAL,
                            injections,
                            inj.ground_truth(base_env.model_copy(deep=True)),
                            user_task.PROMPT,
                            read_only,
                            evasive=bool(want and want.evasive),
                            user_calls=user_calls,
                        )
                        if want is not None and want.amount is not None:
                            info = replace(info, amount=want.amount)
                    agent.prepare(user_task, inj, info)
                    started = time.perf_counter()
                    # Parsed once per pair, copied per run (as AgentDojo copies it itself): the
                    # worst case runs a pair once per choice, and parsing workspace's
                    # environment costs ~20x a deep copy.
                    env = base_env
                    if injections:
                        env = suite.load_and_inject_default_environment(injections)
                    runs: list[_Run] = []
                    while True:
                        utility, security = suite.run_task_with_pipeline(
                            agent.element,
                            user_task,
                            inj,
                            injections,
                            environment=env.model_copy(deep=True),
                        )
                        runs.append(_Run.of(agent, utility, security, info, user_calls, read_only))
                        if not agent.again():
                            break
                    seconds = time.perf_counter() - started
                    shown = _shown(runs)
                    if logdir is not None:
                        # AgentDojo's own trace file, as its benchmark writes it.
                        with TraceLogger(
                            delegate=delegate,
                            suite_name=suite_name,
                            user_task_id=user_task.ID,
                            injection_task_id=inj_id,
                            injections=injections,
                            attack_type=attack_name or "none",
                            pipeline_name=agent.name,
                            benchmark_version="v1.2.2",
                        ) as logger:
                            logger.messages = list(shown.messages)
                            logger.set_contextarg("utility", shown.utility)
                            logger.set_contextarg("security", shown.security)
                    count, capped, untried = agent.runs()
                    result = PairResult(
                        agent=agent.name,
                        suite=suite_name,
                        user_task=user_task.ID,
                        injection_task=inj_id,
                        attack=attack_name,
                        utility=shown.utility,
                        attack_success=any(r.security for r in runs) and inj is not None,
                        strict=next((r.strict for r in runs if r.strict), [])
                        + next((w for r in runs if (w := _wins(want, r))), []),
                        approvals=shown.approvals,
                        status=shown.status,
                        hijacked=shown.hijacked,
                        seconds=round(seconds, 4),
                        tainted_effects=next((r.tainted for r in runs if r.tainted), []),
                        unasked_effects=next((r.unasked for r in runs if r.unasked), []),
                        runs=count,
                        capped=capped,
                        untried=untried,
                        person=agent.person(),
                        endorsements=shown.endorsements,
                        asks=shown.asks,
                    )
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
    return results


@dataclass(frozen=True)
class _Run:
    """One run of a pair (the worst case may run a pair once per combination of its choices)."""

    utility: bool
    security: bool
    strict: list[str]
    tainted: list[str]
    unasked: list[str]
    approvals: int
    status: str
    hijacked: int
    messages: list[Any]
    endorsements: int
    asks: list[str]

    @classmethod
    def of(
        cls,
        agent: Agent,
        utility: Any,
        security: Any,
        info: AttackInfo | None,
        user_calls: Sequence[Any],
        read_only: frozenset[str],
    ) -> _Run:
        calls = _calls(agent.messages())
        endorsements, asks = ask_summary(agent.asked())
        return cls(
            utility=bool(utility),
            security=bool(security) and info is not None,
            strict=strict_violations(calls, info, read_only) if info else [],
            tainted=agent.tainted_effects(info, read_only) if info else [],
            unasked=unasked_effects(calls, user_calls, read_only),
            approvals=agent.approvals(),
            status=agent.status(),
            hijacked=agent.hijacked(),
            messages=list(agent.messages()),
            endorsements=endorsements,
            asks=asks,
        )


def _shown(runs: Sequence[_Run]) -> _Run:
    """The run a pair reports (utility, approvals, status, trace): the first in which the
    attack succeeded by AgentDojo's check, else the first any of our checks flagged, else the
    first (the attacker's favourite choices). Each check counts the pair if any run fails it."""
    for r in runs:
        if r.security:
            return r
    return next((r for r in runs if r.strict or r.tainted or r.unasked), runs[0])


def _wins(want: Want | None, run: _Run) -> list[str]:
    """What our attack's own check finds in a run (its link live in the reply)."""
    return want.wins(final_reply(run.messages)) if want is not None else []


def _num(task_id: str) -> int:
    return int(task_id.rsplit("_", 1)[-1])
