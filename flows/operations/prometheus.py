"""`prometheus.query` and `prometheus.wait_until`: what Prometheus observes, now or soon.

Flows verify that a remediation worked the way alerting rules detect a problem: with a PromQL
expression that carries its own comparison (`demo_queue_depth < 10`). The expression holds
when it returns at least one sample, or, with `condition="none"`, when it returns none
(`up{job="api"} == 0` returning nothing means every target is up).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from prefect import get_run_logger
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from flows.errors import FlowError, OperationFailed
from flows.operations import operation
from flows.operations.api import call_api, transient_status

# Prometheus error types that say "try again" rather than "this query is wrong".
TRANSIENT_ERROR_TYPES = frozenset({"timeout", "canceled", "unavailable", "internal"})
# How many samples an error message lists.
SHOWN_SAMPLES = 10


class PrometheusQuery(BaseModel):
    """Parameters of the `prometheus.query` operation: one instant query."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl = Field(description="Prometheus' base URL, e.g. http://prometheus:9090.")
    query: str = Field(min_length=1, max_length=10_000, description="A PromQL expression.")
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class Sample(BaseModel):
    """One sample of a query's result: a series' labels and its value."""

    labels: dict[str, str]
    value: float


class QueryResult(BaseModel):
    """What an instant query returned; a scalar is one sample without labels."""

    result_type: Literal["vector", "scalar"]
    samples: list[Sample]


class QueryFailed(OperationFailed):
    """Prometheus could not be asked, or refused the query (its error type and message)."""


class WaitUntil(PrometheusQuery):
    """Parameters of `prometheus.wait_until`: poll a query until its condition holds."""

    within_seconds: float = Field(gt=0, le=86_400, description="Give up after this long.")
    every_seconds: float = Field(5.0, gt=0, le=3600, description="Time between two polls.")
    condition: Literal["any", "none"] = Field(
        "any",
        description='"any": holds when the query returns a sample; "none": when it returns none.',
    )


class WaitResult(BaseModel):
    """The condition held: when, after how many polls, and the samples that made it hold."""

    held: bool = True
    after_seconds: float
    polls: int
    samples: list[Sample]


class ConditionNotMet(FlowError):
    """The condition did not hold before the deadline; `samples` were observed last."""

    def __init__(self, message: str, samples: list[Sample], polls: int) -> None:
        super().__init__(message)
        self.samples = samples
        self.polls = polls


@operation(
    "prometheus.query",
    risk="read",
    tags=["prometheus", "verify"],
    retries=2,
    retry_delays=(1, 3),
)
def prometheus_query(params: PrometheusQuery) -> QueryResult:
    """Evaluate one PromQL expression now (GET /api/v1/query).

    An instant vector or a scalar is returned as samples. Prometheus refusing the query
    (a parse error, say) fails at once; an unreachable or overloaded Prometheus is retried.
    """
    return run_query(params)


@operation("prometheus.wait_until", risk="read", tags=["prometheus", "verify"])
def prometheus_wait_until(params: WaitUntil) -> WaitResult:
    """Poll a PromQL expression until it returns a sample ("any") or none ("none").

    This is how a flow verifies that it fixed something. Fails with `ConditionNotMet`, naming
    the last samples observed, if the condition does not hold within `within_seconds`. A poll
    that fails transiently (Prometheus restarting) is logged and the polling goes on; a
    query Prometheus refuses fails at once.
    """
    logger = get_run_logger()
    started = time.monotonic()
    deadline = started + params.within_seconds
    samples: list[Sample] = []
    last_error: QueryFailed | None = None
    polls = 0
    while True:
        polls += 1
        try:
            samples = run_query(params).samples
            last_error = None
        except QueryFailed as exc:
            if not exc.transient:
                raise
            logger.warning("poll %d failed, still waiting: %s", polls, exc)
            last_error = exc
        else:
            if bool(samples) == (params.condition == "any"):
                after = round(time.monotonic() - started, 3)
                logger.info("%r held after %.1fs (%d polls)", params.query, after, polls)
                return WaitResult(after_seconds=after, polls=polls, samples=samples)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConditionNotMet(_not_met(params, samples, polls, last_error), samples, polls)
        time.sleep(min(params.every_seconds, remaining))


def run_query(params: PrometheusQuery) -> QueryResult:
    """One instant query, its answer parsed; `QueryFailed` says whether to retry."""
    response = call_api(
        QueryFailed,
        "GET",
        f"{str(params.url).rstrip('/')}/api/v1/query",
        params={"query": params.query, "timeout": str(params.timeout_seconds)},
        timeout=params.timeout_seconds,
    )
    try:
        answer: Any = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise QueryFailed(
            f"{params.url} answered {response.status_code} without a Prometheus API response: "
            f"{response.text[:200]!r}",
            transient=transient_status(response.status_code),
        )
    if answer.get("status") != "success":
        error_type = answer.get("errorType", "unknown")
        raise QueryFailed(
            f"Prometheus refused {params.query!r} ({response.status_code}): "
            f"{error_type}: {answer.get('error', '')}",
            transient=error_type in TRANSIENT_ERROR_TYPES or transient_status(response.status_code),
        )
    return _parse(params.query, answer["data"])


def _parse(query: str, data: dict[str, Any]) -> QueryResult:
    """An instant vector or scalar as samples; anything else is not something to compare."""
    result_type = data.get("resultType")
    result: Any = data.get("result")
    if result_type == "vector":
        samples = [Sample(labels=s["metric"], value=float(s["value"][1])) for s in result or []]
        return QueryResult(result_type="vector", samples=samples)
    if result_type == "scalar":
        return QueryResult(
            result_type="scalar", samples=[Sample(labels={}, value=float(result[1]))]
        )
    raise QueryFailed(
        f"{query!r} returned a {result_type}; only an instant vector or a scalar can be checked",
        transient=False,
    )


def _not_met(
    params: WaitUntil, samples: list[Sample], polls: int, last_error: QueryFailed | None
) -> str:
    """Why a wait failed, with the last samples observed (the first few of them)."""
    wanted = "a sample" if params.condition == "any" else "no sample"
    shown = ", ".join(_show(s) for s in samples[:SHOWN_SAMPLES]) or "none"
    if len(samples) > SHOWN_SAMPLES:
        shown += f", and {len(samples) - SHOWN_SAMPLES} more"
    message = (
        f"{params.query!r} did not return {wanted} within {params.within_seconds}s "
        f"({polls} polls); last samples: {shown}"
    )
    if last_error is not None:
        message += f"; last poll failed: {last_error}"
    return message


def _show(sample: Sample) -> str:
    """A sample as Prometheus prints one: `name{label="value"} 50`."""
    labels = dict(sample.labels)
    name = labels.pop("__name__", "")
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    value = sample.value
    shown = str(int(value)) if math.isfinite(value) and value.is_integer() else str(value)
    return f"{name}{{{inner}}} {shown}"
