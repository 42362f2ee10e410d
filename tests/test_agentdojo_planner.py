"""AgentDojo with a model in the planner's seat (``--planner MODEL``), with a scripted model.

The planner sees only the task's prompt and the suite's tools, so one plan per user task serves
the benign run and every attack: plans are cached by a hash of prompt, model and registry, in
memory and on disk, and the planner's figures (valid plans, attempts, time) are reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agentdojo")

from typer.testing import CliRunner

from planlock.bench.agentdojo import ModelPlanner, PlanlockAgent, planner_rows, run_pairs
from planlock.bench.agentdojo._bench import make_element
from planlock.bench.agentdojo._corpus import CorpusPlanner
from planlock.bench.agentdojo._suite import PlannedTask, load_suite
from planlock.cli import app
from planlock.llm import LLMRequest
from planlock.policy import assess
from planlock.testing import ScriptedLLM
from planlock.tools import ToolRegistry

TOTAL_SPENT = {
    "steps": [
        {"id": "1", "tool": "get_most_recent_transactions", "args": {}},
        {
            "id": "2",
            "tool": "llm",
            "args": {
                "instruction": "Total spending in March 2022.",
                "input": "{{steps.1.output}}",
                "output_schema": {"type": "number"},
            },
        },
    ]
}
PROMPT_1 = load_suite("banking").get_user_task_by_id("user_task_1").PROMPT


def planner_llm(name: str = "scripted") -> ScriptedLLM:
    def reply(request: LLMRequest) -> Any:
        if PROMPT_1 in request.messages[1].content:
            return TOTAL_SPENT
        return {"cannot_plan": "this scripted planner only knows user_task_1"}

    return ScriptedLLM(reply, name=name)


def registry() -> Any:
    element, _ = make_element("banking", ModelPlanner(planner_llm()), "oracle")
    return element.registry


def test_a_task_is_planned_once_and_a_new_run_reads_the_plan_from_disk(tmp_path: Path) -> None:
    llm = planner_llm()
    first = ModelPlanner(llm, cache_dir=tmp_path)
    reg = registry()
    planned = first.plan_for(PROMPT_1, reg, "banking")
    again = first.plan_for(PROMPT_1, reg, "banking")
    assert isinstance(planned, PlannedTask)
    assert again is planned
    assert len(llm.requests) == 1, "one model call for two uses"
    assert planned.task_id == "user_task_1"
    (record,) = first.records.values()
    assert (record.valid, record.outcome, record.attempts) == (True, "plan", 1)
    assert record.cached is False
    assert len(list(tmp_path.glob("*.json"))) == 1
    # A new run (another process) reads it: the model is not asked.
    silent = ScriptedLLM([RuntimeError("the model must not be asked")])
    second = ModelPlanner(silent, cache_dir=tmp_path)
    second.name = first.name
    silent.name = llm.name
    cached = second.plan_for(PROMPT_1, reg, "banking")
    assert isinstance(cached, PlannedTask)
    assert cached.plan.hash == planned.plan.hash
    assert silent.requests == []
    assert next(iter(second.records.values())).cached is True


def test_another_model_or_registry_is_planned_again(tmp_path: Path) -> None:
    reg = registry()
    ModelPlanner(planner_llm(), cache_dir=tmp_path).plan_for(PROMPT_1, reg, "banking")
    other_model = planner_llm(name="other-model")
    ModelPlanner(other_model, cache_dir=tmp_path).plan_for(PROMPT_1, reg, "banking")
    assert len(other_model.requests) == 1
    smaller = ToolRegistry([t for t in registry() if t.name != "send_money"])
    again = planner_llm()
    ModelPlanner(again, cache_dir=tmp_path).plan_for(PROMPT_1, smaller, "banking")
    assert len(again.requests) == 1, "a registry change is a new key"
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_a_refusal_is_recorded_and_answered_without_running_anything(tmp_path: Path) -> None:
    source = ModelPlanner(planner_llm(), cache_dir=tmp_path)
    prompt = load_suite("banking").get_user_task_by_id("user_task_0").PROMPT
    got = source.plan_for(prompt, registry(), "banking")
    assert isinstance(got, str)
    assert "cannot_plan" in got
    (record,) = source.records.values()
    assert (record.valid, record.outcome, record.plan) == (False, "cannot_plan", None)
    rows = planner_rows(list(source.records.values()))
    assert (rows[0].tasks, rows[0].valid, rows[0].cannot_plan) == (1, 0, 1)


def test_every_attack_on_a_task_reuses_its_one_plan() -> None:
    llm = planner_llm()
    source = ModelPlanner(llm)
    element, worst = make_element("banking", source, "worst")
    results = run_pairs(
        PlanlockAgent(element, worst),
        "banking",
        "important_instructions",
        user_tasks=["user_task_1"],
        injection_tasks=["injection_task_0", "injection_task_1"],
    )
    assert len(results) == 2
    assert len(llm.requests) == 1
    assert not any(r.attack_success for r in results)


def test_the_cli_plans_only_and_reports_the_planner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = planner_llm()
    monkeypatch.setattr("planlock.cli._bench.load_model", lambda spec: llm)
    args = ["bench", "agentdojo", "--planner", "scripted", "-s", "banking", "-o", str(tmp_path)]
    tasks = ["--user-task", "user_task_0", "--user-task", "user_task_1"]
    result = CliRunner().invoke(app, [*args, *tasks, "--plan-only", "--price", "2", "8"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "agentdojo.json").read_text())
    (row,) = data["planner"]
    assert (row["suite"], row["tasks"], row["valid"], row["cannot_plan"]) == ("banking", 2, 1, 1)
    # The cost estimate is the backend's token counts at the given prices.
    records = [json.loads(f.read_text()) for f in (tmp_path / "plans").glob("*.json")]
    tokens_in = sum(r["input_tokens"] for r in records)
    tokens_out = sum(r["output_tokens"] for r in records)
    assert (row["input_tokens"], row["output_tokens"]) == (tokens_in, tokens_out)
    assert tokens_in > 1000
    assert row["cost_usd"] == round((2 * tokens_in + 8 * tokens_out) / 1e6, 4)
    assert data["pairs"] == []
    assert len(list((tmp_path / "plans").glob("*.json"))) == 2
    assert "| banking | 2 | 1 (50.0%)" in (tmp_path / "agentdojo.md").read_text()
    # The pairs then use the cached plans: the model is not asked again.
    asked = len(llm.requests)
    result = CliRunner().invoke(
        app, [*args, *tasks, "--attack", "none", "--no-baseline", "--step-llm", "worst"]
    )
    assert result.exit_code == 0, result.output
    assert len(llm.requests) == asked
    data = json.loads((tmp_path / "agentdojo.json").read_text())
    assert data["planner"][0]["cached"] == 2


def test_plan_only_needs_a_model_planner(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "agentdojo", "--plan-only", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "--plan-only needs a model planner" in result.output


def test_a_failed_model_call_is_not_cached(tmp_path: Path) -> None:
    broken = ScriptedLLM([RuntimeError("request exceeds the available context size")] * 3)
    got = ModelPlanner(broken, cache_dir=tmp_path).plan_for(PROMPT_1, registry(), "banking")
    assert isinstance(got, str)
    assert "error" in got
    llm = planner_llm(name="scripted")
    llm.name = broken.name
    again = ModelPlanner(llm, cache_dir=tmp_path).plan_for(PROMPT_1, registry(), "banking")
    assert isinstance(again, PlannedTask), "planned again, not read back as a failure"
    assert len(llm.requests) == 1


def test_the_cli_bounds_a_model_planners_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = ScriptedLLM([{"steps": [{"id": "1", "tool": "no_such_tool", "args": {}}]}] * 3)
    monkeypatch.setattr("planlock.cli._bench.load_model", lambda spec: llm)
    args = ["bench", "agentdojo", "--planner", "x", "-s", "banking", "-o", str(tmp_path)]
    args += ["--user-task", "user_task_1", "--plan-only", "--max-attempts", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(llm.requests) == 1
    (row,) = json.loads((tmp_path / "agentdojo.json").read_text())["planner"]
    assert (row["valid"], row["invalid"]) == (0, 1)


def test_a_model_s_made_up_payee_goes_to_a_person_on_the_plan() -> None:
    """The embedded planner paid 100 to an IBAN it made up (here: a refund of user_task_4, whose
    prompt names GB29NWBK60161331926819), with the banking policy that lets the plan's own
    payments run: with a model planner, a literal the prompt does not give is
    asked about on the plan (``Policy.ungrounded_literal``); the corpus keeps the suite's."""
    made_up = {
        "steps": [
            {
                "id": "1",
                "tool": "send_money",
                "args": {
                    "recipient": "DE02120300000000202051",
                    "amount": 100,
                    "subject": "refund",
                    "date": "2022-04-01",
                },
            }
        ]
    }
    element, _ = make_element("banking", ModelPlanner(ScriptedLLM([made_up])), "oracle")
    assert element.policy.ungrounded_literal == "require_approval"
    corpus, _ = make_element("banking", CorpusPlanner(), "oracle")
    assert corpus.policy.ungrounded_literal == "allow"
    prompt = load_suite("banking").get_user_task_by_id("user_task_4").PROMPT
    planned = element.planner.plan_for(prompt, element.registry, "banking")
    assert isinstance(planned, PlannedTask)
    report = assess(planned.plan, element.registry, element.policy)
    keys = {r.key for s in report.needs_plan_approval for r in s.reasons}
    assert {"literal:recipient", "literal:amount", "literal:date"} <= keys
    assert not assess(planned.plan, element.registry, element.tools.policy).needs_plan_approval


def test_replan_invalid_plans_again_only_the_tasks_with_no_valid_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a planner change, ``--replan-invalid`` asks the model again for the cached
    ``invalid`` records only; a cached valid plan is read back, not asked for."""
    wrong = {"steps": [{"id": "1", "tool": "no_such_tool", "args": {}}]}
    first = ScriptedLLM([wrong] * 3, name="scripted")
    got = ModelPlanner(first, cache_dir=tmp_path).plan_for(PROMPT_1, registry(), "banking")
    assert isinstance(got, str)
    assert "invalid" in got
    # Without the flag the invalid record is read back ...
    silent = ScriptedLLM([RuntimeError("the model must not be asked")], name="scripted")
    kept = ModelPlanner(silent, cache_dir=tmp_path).plan_for(PROMPT_1, registry(), "banking")
    assert isinstance(kept, str)
    assert silent.requests == []
    # ... with it, the task is planned again and the new record replaces the old one.
    llm = planner_llm(name="scripted")
    again = ModelPlanner(llm, cache_dir=tmp_path, replan_invalid=True)
    planned = again.plan_for(PROMPT_1, registry(), "banking")
    assert isinstance(planned, PlannedTask)
    assert len(llm.requests) == 1
    assert len(list(tmp_path.glob("*.json"))) == 1
    # A valid cached plan is kept under the flag too; the CLI passes the flag through.
    monkeypatch.setattr("planlock.cli._bench.load_model", lambda spec: silent)
    args = ["bench", "agentdojo", "--planner", "scripted", "-s", "banking", "-o", str(tmp_path)]
    args += ["--user-task", "user_task_1", "--plan-only", "--replan-invalid"]
    args += ["--plan-cache", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert silent.requests == []
    (row,) = json.loads((tmp_path / "agentdojo.json").read_text())["planner"]
    assert (row["valid"], row["cached"]) == (1, 1)


def _regrammared(tmp_path: Path, **changes: Any) -> None:
    """The one cached record, as if planned under another reply schema (and with ``changes``)."""
    (path,) = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    record.update(schema="an older grammar", **changes)
    path.write_text(json.dumps(record))


def test_a_record_from_another_grammar_is_kept_only_if_this_grammar_allows_it(
    tmp_path: Path,
) -> None:
    """The reply schema is not in the key: under a new one, a cached valid plan that the new
    grammar allows is kept (greedy decoding would write it again); one it forbids is planned
    again; a task that had no valid plan is planned again with --replan-invalid only."""
    ModelPlanner(planner_llm(), cache_dir=tmp_path).plan_for(PROMPT_1, registry(), "banking")
    (path,) = tmp_path.glob("*.json")
    assert json.loads(path.read_text())["schema"] is not None
    _regrammared(tmp_path)
    silent = ScriptedLLM([RuntimeError("the model must not be asked")], name="scripted")
    kept = ModelPlanner(silent, cache_dir=tmp_path).plan_for(PROMPT_1, registry(), "banking")
    assert isinstance(kept, PlannedTask)
    assert silent.requests == []
    # A plan the new grammar forbids (a condition on the first step) is planned again.
    plan = json.loads(path.read_text())["plan"]
    plan["steps"][0]["when"] = {"ref": "{{steps.0.output.0.amount}}", "op": "gt", "value": 1}
    _regrammared(tmp_path, plan=plan)
    llm = planner_llm(name="scripted")
    again = ModelPlanner(llm, cache_dir=tmp_path).plan_for(PROMPT_1, registry(), "banking")
    assert isinstance(again, PlannedTask)
    assert len(llm.requests) == 1
    assert "when" not in json.loads(path.read_text())["plan"]["steps"][0]
    # An invalid record from another grammar is kept, until --replan-invalid.
    _regrammared(tmp_path, plan=None, valid=False, outcome="invalid")
    kept_invalid = ModelPlanner(silent, cache_dir=tmp_path)
    assert isinstance(kept_invalid.plan_for(PROMPT_1, registry(), "banking"), str)
    assert silent.requests == []
    third = planner_llm(name="scripted")
    replanned = ModelPlanner(third, cache_dir=tmp_path, replan_invalid=True)
    assert isinstance(replanned.plan_for(PROMPT_1, registry(), "banking"), PlannedTask)
    assert len(third.requests) == 1


def test_an_invalid_records_first_reply_is_checked_again_before_the_model_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record keeps the model's replies. Under ``replan_invalid``, a first reply that the
    planner's repairs now make valid is the plan, with no model call; one they do not is planned
    again."""
    wrapped = json.loads(json.dumps(TOTAL_SPENT))
    wrapped["steps"][1]["args"]["input"] = "{{steps.1.output.amount}}"  # a field of the list
    first = ScriptedLLM([wrapped] * 3, name="scripted")
    reg = registry()
    # This planner has no path repairs: the reply stays invalid.
    monkeypatch.setattr("planlock.planning._planner.fix_reply", lambda *a, **k: None)
    got = ModelPlanner(first, cache_dir=tmp_path).plan_for(PROMPT_1, reg, "banking")
    assert isinstance(got, str)
    (path,) = tmp_path.glob("*.json")
    stored = json.loads(path.read_text())
    assert stored["outcome"] == "invalid"
    assert [json.loads(r) for r in stored["replies"]] == [wrapped] * 3
    monkeypatch.undo()
    # The planner's repairs as they are now make the first reply valid: no model call.
    silent = ScriptedLLM([RuntimeError("the model must not be asked")], name="scripted")
    source = ModelPlanner(silent, cache_dir=tmp_path, replan_invalid=True)
    planned = source.plan_for(PROMPT_1, reg, "banking")
    assert isinstance(planned, PlannedTask)
    assert silent.requests == []
    assert planned.plan.steps[1].args["input"] == "{{steps.1.output.0.amount}}"
    record = json.loads(path.read_text())
    assert (record["outcome"], record["rechecked"], record["attempts"]) == ("plan", True, 1)
    assert record["repaired"] == 1
    assert record["seconds"] == stored["seconds"]
    # A stored reply that the repairs do not fix is planned again.
    _regrammared(tmp_path, outcome="invalid", valid=False, plan=None, rechecked=False)
    record = json.loads(path.read_text())
    record["schema"] = stored["schema"]
    record["replies"] = [json.dumps({"steps": [{"id": "1", "tool": "nope", "args": {}}]})]
    path.write_text(json.dumps(record))
    llm = planner_llm(name="scripted")
    again = ModelPlanner(llm, cache_dir=tmp_path, replan_invalid=True)
    assert isinstance(again.plan_for(PROMPT_1, reg, "banking"), PlannedTask)
    assert len(llm.requests) == 1
