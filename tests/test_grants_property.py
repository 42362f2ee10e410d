"""Property: under the default policy, no tool with an effect beyond ``read`` runs without a grant
bound to the plan's hash, and no untrusted value reaches a sensitive parameter without a grant
bound to that exact call (R6, R7), whatever an approver answers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planlock import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequest,
    ApprovalRequired,
    Approved,
    Decision,
    LLMRequest,
    Plan,
    RunResult,
    StepContext,
    ToolRegistry,
    canonical_json,
    run_sync,
    validate,
)
from planlock.testing import ScriptedLLM, memory_journal

SETTINGS = settings(
    max_examples=examples(150),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Call:
    tool: str
    step_id: str
    kwargs: dict[str, Any]


CALLS: list[Call] = []
"""Every tool call of the current example."""


def build_registry() -> ToolRegistry:
    """Tools of every effect; some with sensitive parameters, some with trusted output."""
    reg = ToolRegistry()

    def record(tool: str, ctx: StepContext, **kwargs: Any) -> str:
        CALLS.append(Call(tool, ctx.step_id, kwargs))
        return f"{tool}@{ctx.step_id}"

    @reg.tool(effect="read")
    async def fetch(ctx: StepContext) -> str:
        return record("fetch", ctx)

    @reg.tool(effect="read")
    async def search(query: str, ctx: StepContext) -> str:
        return record("search", ctx, query=query)

    @reg.tool(effect="read", trusted_output=True)
    async def lookup(key: str, ctx: StepContext) -> str:
        return record("lookup", ctx, key=key)

    @reg.tool(effect="read", sensitive=["url"])
    async def browse(url: str, ctx: StepContext) -> str:
        return record("browse", ctx, url=url)

    @reg.tool(effect="write", sensitive=["path"])
    async def save(path: str, content: str, ctx: StepContext) -> str:
        return record("save", ctx, path=path, content=content)

    @reg.tool(effect="write", trusted_output=True)
    async def tally(items: list[str], ctx: StepContext) -> str:
        return record("tally", ctx, items=items)

    @reg.tool(effect="delete", sensitive=["path"])
    async def remove(path: str, ctx: StepContext) -> str:
        return record("remove", ctx, path=path)

    @reg.tool(effect="send", sensitive=["to"])
    async def notify(to: list[str], payload: dict[str, str], ctx: StepContext) -> str:
        return record("notify", ctx, to=to, payload=payload)

    @reg.tool(effect="pay", sensitive=["recipient"])
    async def pay(recipient: str, amount: int, ctx: StepContext) -> str:
        return record("pay", ctx, recipient=recipient, amount=amount)

    @reg.tool
    async def mystery(x: str, ctx: StepContext) -> str:
        return record("mystery", ctx, x=x)

    return reg


REGISTRY = build_registry()
READ_TOOLS = sorted(t.name for t in REGISTRY if t.effect == "read")
TOOL_CHOICES = [
    *sorted(t.name for t in REGISTRY),
    *sorted(t.name for t in REGISTRY if t.sensitive),  # twice as likely: more flows
    "llm",
]
INPUTS: dict[str, Any] = {"user": {"name": "dana", "email": "dana@example.com"}, "n": 7}

PARAMS: dict[str, dict[str, str]] = {
    # tool: {parameter: kind of value}; every parameter is required, so the keyword arguments
    # a tool receives are exactly the resolved arguments the approval hash covers.
    "fetch": {},
    "search": {"query": "str"},
    "lookup": {"key": "str"},
    "browse": {"url": "str"},
    "save": {"path": "str", "content": "str"},
    "tally": {"items": "list"},
    "remove": {"path": "str"},
    "notify": {"to": "list", "payload": "dict"},
    "pay": {"recipient": "str", "amount": "int"},
    "mystery": {"x": "str"},
    "llm": {"input": "any"},
}


def llm_reply(request: LLMRequest) -> dict[str, Any]:
    assert request.json_schema is not None
    assert request.json_schema["properties"]["result"] == {"type": "string"}
    return {"result": "from the llm"}


# --- plans ---------------------------------------------------------------------------------------

Value = tuple[Any, frozenset[str]]
"""A plan value and the step ids it references."""


@dataclass(frozen=True)
class Generated:
    plan: Plan
    tools: dict[str, str]
    """step id -> tool."""
    refs: dict[str, dict[str, frozenset[str]]]
    """step id -> parameter -> the steps its value references."""

    def untrusted_output(self, sid: str) -> bool:
        """A reference model of provenance: an llm step's output is always untrusted (its own
        label), a tool's output is trusted exactly when the tool says so."""
        tool = self.tools[sid]
        return tool == "llm" or not REGISTRY[tool].trusted_output

    def untrusted_sensitive(self, sid: str) -> list[str]:
        tool = self.tools[sid]
        if tool == "llm":
            return []
        return sorted(
            p
            for p in REGISTRY[tool].sensitive
            if any(self.untrusted_output(r) for r in self.refs[sid].get(p, ()))
        )

    def needs_person(self) -> bool:
        return any(
            (t != "llm" and REGISTRY[t].effect != "read") or self.untrusted_sensitive(s)
            for s, t in self.tools.items()
        )


words = st.sampled_from(["a", "bill", "x y", "DE00 1", "/tmp/f", ""])
input_refs = st.sampled_from(["{{user.name}}", "{{user.email}}", "{{input.user.name}}"])


@st.composite
def ref_parts(draw: st.DrawFn, earlier: tuple[str, ...]) -> Value:
    """A single piece: a literal, a trusted input, or an earlier step's output."""
    kind = draw(st.sampled_from(["lit", "input", "step", "step"] if earlier else ["lit", "input"]))
    if kind == "lit":
        return draw(words), frozenset()
    if kind == "input":
        return draw(input_refs), frozenset()
    sid = draw(st.sampled_from(earlier))
    return "{{steps." + sid + ".output}}", frozenset((sid,))


@st.composite
def str_values(draw: st.DrawFn, earlier: tuple[str, ...]) -> Value:
    """A literal, a whole placeholder, or an interpolation of several pieces."""
    if draw(st.booleans()):
        return draw(ref_parts(earlier))
    parts = draw(st.lists(ref_parts(earlier), min_size=1, max_size=3))
    text = "v " + " ".join(p for p, _ in parts)
    return text, frozenset().union(*(r for _, r in parts))


@st.composite
def values(draw: st.DrawFn, kind: str, earlier: tuple[str, ...]) -> Value:
    if kind == "str":
        return draw(str_values(earlier))
    if kind == "int":
        return draw(st.sampled_from([0, 5, 10_000, "{{n}}"])), frozenset()
    if kind == "list":
        items = draw(st.lists(str_values(earlier), max_size=3))
        return [v for v, _ in items], frozenset().union(*(r for _, r in items))
    if kind == "dict":
        entries = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), str_values(earlier)))
        return (
            {k: v for k, (v, _) in entries.items()},
            frozenset().union(*(r for _, r in entries.values())),
        )
    return draw(values(draw(st.sampled_from(["str", "list", "dict"])), earlier))


@st.composite
def plans(draw: st.DrawFn, tools: list[str]) -> Generated:
    n = draw(st.integers(1, 6))
    steps: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}
    refs: dict[str, dict[str, frozenset[str]]] = {}
    for i in range(n):
        sid = f"s{i}"
        earlier = tuple(kinds)
        tool = draw(st.sampled_from(tools))
        args: dict[str, Any] = {}
        refs[sid] = {}
        for param, kind in PARAMS[tool].items():
            args[param], refs[sid][param] = draw(values(kind, earlier))
        if tool == "llm":
            args["instruction"] = "Summarize the input."
            if draw(st.booleans()):
                args["output_schema"] = {"type": "string"}
        steps.append({"step": sid, "tool": tool, "args": args})
        kinds[sid] = tool
    return Generated(Plan.parse(steps), kinds, refs)


# --- approvers -----------------------------------------------------------------------------------

WRONG = ["deny", "wrong_plan", "wrong_step", "wrong_args", "unbound", "expired", "cannot_ask"]
LONG_AGO = "2000-01-01T00:00:00+00:00"


@dataclass
class RandomApprover:
    """Answers each request as drawn for it (by request, so the answer does not depend on the
    order in which parallel steps ask), and records every decision it returned."""

    plan_answer: str
    call_answers: dict[str, str]
    other_plan_hash: str
    decisions: list[tuple[ApprovalRequest, Decision | None]] = field(default_factory=list)

    def __call__(self, request: ApprovalRequest) -> Decision:
        if request.kind == "plan":
            answer = self.plan_answer
        else:
            assert request.step_id is not None
            answer = self.call_answers.get(request.step_id, "approve")
        if answer == "cannot_ask":
            self.decisions.append((request, None))
            raise ApprovalRequired(["nobody is there"])
        decision = self.answer(request, answer)
        self.decisions.append((request, decision))
        return decision

    def answer(self, request: ApprovalRequest, answer: str) -> Decision:
        grant = request.approve("tester", "property")
        if answer == "deny":
            return request.deny("tester", "property", "no")
        if answer == "wrong_plan":
            return Approved(**{**grant.to_json(), "plan_hash": self.other_plan_hash})
        if answer == "wrong_step":
            other = "s0" if request.step_id != "s0" else "s1"
            return Approved(**{**grant.to_json(), "step_id": other})
        if answer == "wrong_args":
            return Approved(**{**grant.to_json(), "args_hash": "0" * 64})
        if answer == "unbound":
            # a call answered with a plan grant, a plan answered with a call grant
            if request.kind == "call":
                return Approved(request.plan_hash, "tester", "property")
            return Approved(**{**grant.to_json(), "step_id": "s0", "args_hash": "0" * 64})
        if answer == "expired":
            return request.approve("tester", "property", expires_at=LONG_AGO)
        return grant

    def grants(self) -> list[Approved]:
        return [d for _, d in self.decisions if isinstance(d, Approved)]

    def asked(self, kind: str) -> list[ApprovalRequest]:
        return [r for r, _ in self.decisions if r.kind == kind]


def valid_now(grant: Approved) -> bool:
    return grant.expires_at is None or datetime.fromisoformat(grant.expires_at) > datetime.now(UTC)


def args_hash(kwargs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(kwargs).encode()).hexdigest()


def execute(generated: Generated, approver: Any) -> RunResult | None:
    """Run the plan; None when the plan itself was refused (nothing may have run then)."""
    CALLS.clear()
    journal = memory_journal()
    try:
        return run_sync(
            generated.plan,
            REGISTRY,
            inputs=INPUTS,
            approver=approver,
            llm=ScriptedLLM(llm_reply),
            journal=journal,
            retries=0,
        )
    except (ApprovalDenied, ApprovalMismatch, ApprovalRequired):
        assert CALLS == []
        return None
    finally:
        assert journal.verify().ok


# The plan is approved properly about 3 times in 4 and each call about 1 in 2, so that runs get
# far enough to ask about calls; every other answer is one of the wrong ones.
plan_answers = st.tuples(st.booleans(), st.booleans(), st.sampled_from(WRONG)).map(
    lambda t: "approve" if t[0] or t[1] else t[2]
)
call_answers = st.tuples(st.booleans(), st.sampled_from(WRONG)).map(
    lambda t: "approve" if t[0] else t[1]
)
step_answers = st.lists(call_answers, min_size=6, max_size=6).map(
    lambda answers: {f"s{i}": a for i, a in enumerate(answers)}
)


# --- the properties ------------------------------------------------------------------------------


@SETTINGS
@given(plans(TOOL_CHOICES), plan_answers, step_answers)
def test_no_effect_and_no_untrusted_sensitive_value_without_a_matching_grant(
    generated: Generated, plan_answer: str, call_answers: dict[str, str]
) -> None:
    plan = generated.plan
    assert validate(plan, REGISTRY, inputs=INPUTS).ok
    other = Plan(goal="another plan", steps=plan.steps).hash
    approver = RandomApprover(plan_answer, call_answers, other)
    result = execute(generated, approver)
    grants = [g for g in approver.grants() if g.plan_hash == plan.hash and valid_now(g)]
    plan_grants = [g for g in grants if g.step_id is None and g.args_hash is None]

    # the approver is asked about the plan exactly when the plan needs a person
    assert len(approver.asked("plan")) == (1 if generated.needs_person() else 0)

    seen: set[str] = set()
    for call in CALLS:
        assert call.step_id not in seen  # each step runs at most once
        seen.add(call.step_id)
        tool = REGISTRY[call.tool]
        assert generated.tools[call.step_id] == call.tool  # the plan chose the tool (R3)
        if tool.effect != "read":
            assert plan_grants, f"{call.tool} ran without a grant for plan {plan.hash[:12]}"
        if generated.untrusted_sensitive(call.step_id):
            digest = args_hash(call.kwargs)
            assert any(g.step_id == call.step_id and g.args_hash == digest for g in grants), (
                f"{call.tool} ran with untrusted data in "
                f"{generated.untrusted_sensitive(call.step_id)} without a grant for the call"
            )

    # a call is put to a person exactly when untrusted data reaches a sensitive parameter
    for request in approver.asked("call"):
        assert request.step_id is not None
        assert generated.untrusted_sensitive(request.step_id)
        assert request.args is not None
        assert request.args_hash == args_hash(request.args)
        assert [r.key for r in request.reasons] == [
            f"flow:{p}" for p in generated.untrusted_sensitive(request.step_id)
        ]

    # an approver that approves everything properly gets every step run
    everything_approved = plan_answer == "approve" and all(
        call_answers.get(s, "approve") == "approve" for s in generated.tools
    )
    if everything_approved:
        assert result is not None
        assert result.ok, (result.failed_step, result.error_kind, result.error)
        assert sorted(c.step_id for c in CALLS) == sorted(
            s for s, t in generated.tools.items() if t != "llm"
        )


@SETTINGS
@given(plans([*READ_TOOLS, "llm"]))
def test_read_only_plans_without_flows_never_ask_the_approver(generated: Generated) -> None:
    asked: list[ApprovalRequest] = []

    def approver(request: ApprovalRequest) -> Decision:
        asked.append(request)
        return request.deny("tester", "property", "should not have been asked")

    result = execute(generated, approver)
    flows = [s for s in generated.tools if generated.untrusted_sensitive(s)]
    if flows:
        # a read with untrusted data in a sensitive parameter does need a person
        assert asked
        assert result is None
        assert CALLS == []
        return
    assert asked == []
    assert result is not None
    assert result.ok
    assert set(result.statuses.values()) == {"finished"}
    assert len(CALLS) == sum(1 for t in generated.tools.values() if t != "llm")
