"""The oracle in-step model for the AgentDojo benchmark.

``OracleLLM`` (labelled *oracle* everywhere it is reported) answers each quarantined step from
an answer table written from the task's ground truth: it stands in for a perfect honest model
so that utility measures the plans and the policy, not a model's reading skills. The attacker's
worst case is ``WorstCaseLLM`` (``_worst``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from planlock.bench.agentdojo._watch import StepWatch
from planlock.errors import LLMError
from planlock.llm import LLMReply, LLMRequest

__all__ = ["OracleLLM"]


class OracleLLM:
    """Answers each quarantined step from a table written from the task's ground truth.

    ``answers[task_id][step_id]`` is the step's ``result``. It is not a model: it is labelled
    ``oracle`` wherever a result is reported, and stands in for a perfect honest one.
    """

    name = "oracle"

    def __init__(self, answers: Mapping[str, Mapping[str, Any]], watch: StepWatch) -> None:
        self.answers = answers
        self.watch = watch

    async def complete(self, request: LLMRequest) -> LLMReply:  # noqa: ARG002
        task, step = self.watch.task_id, self.watch.step_id
        table = self.answers.get(task or "", {})
        if step is None or step not in table:
            raise LLMError(self.name, f"no oracle answer for {task} step {step}")
        text = json.dumps({"result": table[step]})
        return LLMReply(text=text, model=self.name)
