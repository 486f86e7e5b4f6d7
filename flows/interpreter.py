"""Runs YAML flows (`flows.dsl`) as real Prefect flows: one task run per step.

`build_flow` turns a loaded file into a named `@flow` whose signature is the file's parameter
schema, so Prefect validates a run's parameters before the first step, shows them in the UI,
and serves the flow as a deployment like any Python flow.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping
from typing import Any

from prefect import Flow, State, flow, get_run_logger
from prefect.futures import PrefectFuture

from flows.dsl import (
    ApprovalStep,
    BatchStep,
    FlowSource,
    OpStep,
    ParallelStep,
    Step,
    VerifySpec,
    VerifyStep,
)
from flows.errors import Fenced, FlowError, step_retries
from flows.fencing import fenced
from flows.operations import Operation, all_operations
from flows.operations.approval import rejected, require_approval
from responder.decision.templates import evaluate, render_value


class StepFailed(FlowError):
    """A step of a YAML flow failed; the message names the step."""


class RolloutStopped(FlowError):
    """A batch rollout stopped: more elements failed than it allows, or a check failed."""


def python_name(flow_name: str) -> str:
    """The attribute a YAML flow is importable as from `flows.yaml_flows`."""
    return flow_name.replace("-", "_")


def build_flow(source: FlowSource) -> Flow[..., Any]:
    """A Prefect flow that runs the YAML file's steps."""
    spec = source.spec

    @fenced
    def interpret(parameters: dict[str, Any]) -> Any:
        return Interpreter(source).run(parameters)

    def run(*args: Any, **kwargs: Any) -> Any:
        parameters = run.__signature__.bind(*args, **kwargs).arguments  # type: ignore[attr-defined]
        return interpret(dict(parameters))

    run.__name__ = run.__qualname__ = python_name(spec.flow)
    run.__module__ = "flows.yaml_flows"
    run.__doc__ = spec.description
    signature = [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=inspect.Parameter.empty if default is ... else default,
            annotation=annotation,
        )
        for name, (annotation, default) in spec.parameter_fields().items()
    ]
    run.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in signature}
    return flow(name=spec.flow, description=spec.description, log_prints=False)(run)


class Interpreter:
    """One run of a YAML flow: walks the steps, keeping each step's result for later ones."""

    def __init__(self, source: FlowSource) -> None:
        self.spec = source.spec
        self.operations = all_operations()
        self.results: dict[str, Any] = {}
        self.logger = get_run_logger()

    def context(self, params: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        return {"params": params, "steps": self.results, **extra}

    def run(self, parameters: dict[str, Any]) -> Any:
        params = {
            name: value
            for name, value in self.spec.parameters_model.model_validate(parameters)
            .model_dump(mode="json")
            .items()
        }
        if params.pop("approval_required") and not self.spec.has_approval_step:
            answer = require_approval(
                f"run {self.spec.flow} with {params}", params["approval_timeout_seconds"]
            )
            if not answer.approved:
                return rejected(answer)
        for step in self.spec.steps:
            context = self.context(params)
            if step.when is not None and not evaluate(step.when, context):
                self.logger.info("step %s skipped: `%s` is false", step.name, step.when)
                self.results[step.name] = None
                continue
            outcome = self.step(step, params, context)
            if isinstance(outcome, State):
                return outcome
        done = ", ".join(name for name, result in self.results.items() if result is not None)
        return f"{self.spec.flow}: done ({done})"

    def step(self, step: Step, params: Mapping[str, Any], context: dict[str, Any]) -> Any:
        """Run one top-level step; a `State` ends the flow with it (an approval rejected)."""
        if isinstance(step, OpStep):
            self.results[step.name] = self.submit(step, context).result()
        elif isinstance(step, ParallelStep):
            running = {
                nested.name: self.submit(nested, context)
                for nested in step.parallel
                if nested.when is None or evaluate(nested.when, context)
            }
            failed = []
            for name, future in running.items():
                try:
                    self.results[name] = future.result()
                except Fenced:
                    raise  # the run may not act: it ends, cancelled
                except Exception as exc:
                    failed.append(f"{name}: {exc}")
            self.results[step.name] = {name: self.results[name] for name in running}
            if failed:
                raise StepFailed(f"step {step.name}: {'; '.join(failed)}")
        elif isinstance(step, ApprovalStep):
            message = str(render_value(step.approval.message, context, native=True))
            answer = require_approval(message, int(step.approval.timeout))
            self.results[step.name] = answer.model_dump(include={"approved", "approver", "comment"})
            if not answer.approved:
                return rejected(answer)
        elif isinstance(step, VerifyStep):
            self.results[step.name] = self.verify(step.name, step.verify, context)
        elif isinstance(step, BatchStep):
            self.results[step.name] = self.rollout(step, params, context)
        return None

    def submit(self, step: OpStep, context: dict[str, Any], label: str = "") -> PrefectFuture[Any]:
        """Start one operation as a task run named after the step."""
        operation: Operation = self.operations[step.op]
        arguments = operation.parameters.model_validate(
            render_value(step.with_, context, native=True)
        )
        options: dict[str, Any] = {"task_run_name": f"{step.name}{label}"}
        if step.retries is not None:
            options |= step_retries(operation.task, step.retries)
        if step.retry_delay is not None:
            options["retry_delay_seconds"] = step.retry_delay
        if step.timeout is not None:
            options["timeout_seconds"] = step.timeout
        return operation.task.with_options(**options).submit(arguments)

    def verify(self, name: str, spec: VerifySpec, context: dict[str, Any]) -> Any:
        """Wait until a PromQL condition holds, as a `prometheus.wait_until` task run."""
        check = OpStep.model_validate(
            {
                "name": name,
                "op": "prometheus.wait_until",
                "with": {
                    "url": spec.prometheus,
                    "query": spec.query,
                    "condition": spec.condition,
                    "within_seconds": spec.within,
                    "every_seconds": spec.every,
                },
            }
        )
        return self.submit(check, context).result()

    def rollout(
        self, step: BatchStep, params: Mapping[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        """Run the nested steps over a list, a batch at a time, stopping on too many failures.

        Within a batch the elements run at the same time, step by step: an element whose
        step fails takes no further steps and counts as one failure.
        """
        spec = step.batch
        elements = render_value(spec.over, context, native=True)
        if not isinstance(elements, list):
            raise StepFailed(f"step {step.name}: `over` gave {type(elements).__name__}, not a list")
        limits = spec.limits(lambda values: render_value(values, context, native=True))
        size = batch_size(limits.size, len(elements))
        done: list[Any] = []
        failed: list[Any] = []
        batches = [elements[i : i + size] for i in range(0, len(elements), size)]
        for number, batch in enumerate(batches, start=1):
            if number > 1 and limits.pause:
                time.sleep(limits.pause)
            self.logger.info("batch %d/%d: %s", number, len(batches), batch)
            alive = list(batch)
            for nested in spec.steps:
                running: list[tuple[Any, PrefectFuture[Any] | None]] = []
                for element in alive:
                    element_context = self.context(params, **{spec.as_: element})
                    wanted = nested.when is None or evaluate(nested.when, element_context)
                    label = f" [{element}]"
                    running.append(
                        (element, self.submit(nested, element_context, label) if wanted else None)
                    )
                alive = []
                for element, future in running:
                    try:
                        if future is not None:
                            future.result()
                        alive.append(element)
                    except Fenced:
                        raise  # the run may not act: it ends, cancelled
                    except Exception as exc:
                        self.logger.warning("%s failed on %r: %s", nested.name, element, exc)
                        failed.append(element)
            done.extend(alive)
            if len(failed) > limits.max_failures:
                raise RolloutStopped(
                    f"step {step.name}: {len(failed)} failed ({failed}), more than "
                    f"max_failures={limits.max_failures}; not started: "
                    f"{[e for b in batches[number:] for e in b]}"
                )
            if spec.verify is not None:
                self.verify(f"{step.name}_verify", spec.verify, self.context(params, batch=batch))
        return {"done": done, "failed": failed, "batches": len(batches)}


def batch_size(size: str, total: int) -> int:
    """Elements per batch: a count, or a percentage of the total (at least one)."""
    if size.endswith("%"):
        return max(1, math.floor(total * int(size[:-1]) / 100))
    return int(size)
