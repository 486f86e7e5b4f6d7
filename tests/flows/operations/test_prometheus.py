"""`prometheus.query` and `prometheus.wait_until` against a real Prometheus scraping a local
target whose gauge the test changes, run as tasks on the test Prefect server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prefect import flow

from flows.operations.prometheus import (
    ConditionNotMet,
    PrometheusQuery,
    QueryFailed,
    QueryResult,
    Sample,
    WaitResult,
    WaitUntil,
    prometheus_query,
    prometheus_wait_until,
)
from tests.helpers import free_port
from tests.servers import QuietHandler, http_server, prometheus

pytestmark = pytest.mark.prefect


@flow
def query(params: PrometheusQuery, retry_delay_seconds: float = 1) -> QueryResult:
    """The operation as a flow step; the tests shorten the retry delay."""
    return prometheus_query.with_options(retry_delay_seconds=retry_delay_seconds)(params)


@flow
def wait_until(params: WaitUntil) -> WaitResult:
    return prometheus_wait_until(params)


@dataclass
class Demo:
    """A real Prometheus scraping a target that exposes `demo_queue_depth`."""

    url: str = ""
    target: str = ""  # host:port, as the `instance` label shows it
    queue_depth: float = 50

    def until_scraped(self, value: float, timeout: float = 30) -> None:
        """Wait (with plain httpx) until Prometheus has scraped this value of the gauge."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": "demo_queue_depth"})
            result = response.json()["data"]["result"]
            if result and float(result[0]["value"][1]) == value:
                return
            time.sleep(0.2)
        pytest.fail(f"Prometheus did not scrape demo_queue_depth {value} within {timeout}s")


@pytest.fixture(scope="module")
def demo_servers(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """Prometheus (real binary) scraping a local /metrics every second, for the whole module:
    it takes a few seconds to discover a target, so the tests share one.
    """
    demo = Demo()

    class Metrics(QuietHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.reply(404)
                return
            text = (
                "# HELP demo_queue_depth Items waiting in the demo queue.\n"
                "# TYPE demo_queue_depth gauge\n"
                f"demo_queue_depth {demo.queue_depth}\n"
            )
            self.reply(200, text.encode(), "text/plain; version=0.0.4")

    with http_server(Metrics) as target_url:
        demo.target = target_url.removeprefix("http://")
        workdir = tmp_path_factory.mktemp("prometheus")
        with prometheus(workdir, free_port(), [demo.target]) as demo.url:
            yield demo


@pytest.fixture
def demo(demo_servers: Demo) -> Demo:
    """The shared Prometheus, once it has scraped the gauge at 50."""
    demo_servers.queue_depth = 50
    demo_servers.until_scraped(50)
    return demo_servers


def test_query_returns_the_scraped_sample(demo: Demo) -> None:
    result = query(PrometheusQuery(url=demo.url, query="demo_queue_depth"))

    assert result == QueryResult(
        result_type="vector",
        samples=[
            Sample(
                labels={"__name__": "demo_queue_depth", "instance": demo.target, "job": "demo"},
                value=50,
            )
        ],
    )


def test_query_returns_a_scalar_as_one_sample_without_labels(demo: Demo) -> None:
    result = query(PrometheusQuery(url=demo.url, query="scalar(demo_queue_depth) * 2"))

    assert result == QueryResult(result_type="scalar", samples=[Sample(labels={}, value=100)])


def test_wait_until_holds_once_the_gauge_drops(demo: Demo) -> None:
    def drain() -> None:
        demo.queue_depth = 5

    timer = threading.Timer(2.0, drain)
    timer.start()
    try:
        result = wait_until(
            WaitUntil(
                url=demo.url, query="demo_queue_depth < 10", within_seconds=30, every_seconds=0.5
            )
        )
    finally:
        timer.cancel()

    assert result.held
    assert result.polls > 1  # it did not hold at first: the gauge was 50
    assert 1.0 <= result.after_seconds < 30
    assert [s.value for s in result.samples] == [5]


def test_wait_until_none_holds_when_the_query_returns_nothing(demo: Demo) -> None:
    result = wait_until(
        WaitUntil(
            url=demo.url,
            query="demo_queue_depth > 100",
            condition="none",
            within_seconds=5,
            every_seconds=0.5,
        )
    )

    assert (result.held, result.polls, result.samples) == (True, 1, [])


def test_wait_until_fails_after_the_deadline_with_the_last_samples(demo: Demo) -> None:
    started = time.monotonic()
    with pytest.raises(ConditionNotMet) as failure:
        wait_until(
            WaitUntil(
                url=demo.url,
                query="demo_queue_depth > 10",
                condition="none",
                within_seconds=2,
                every_seconds=0.5,
            )
        )
    elapsed = time.monotonic() - started

    assert 2 <= elapsed < 10
    assert failure.value.polls >= 4
    assert [s.value for s in failure.value.samples] == [50]
    message = str(failure.value)
    assert "'demo_queue_depth > 10' did not return no sample within 2.0s" in message
    assert f'demo_queue_depth{{instance="{demo.target}",job="demo"}} 50' in message


def test_wait_until_a_condition_that_never_holds_fails(demo: Demo) -> None:
    with pytest.raises(ConditionNotMet) as failure:
        wait_until(
            WaitUntil(
                url=demo.url, query="demo_queue_depth < 0", within_seconds=1.5, every_seconds=0.5
            )
        )

    assert failure.value.samples == []
    assert "did not return a sample within 1.5s" in str(failure.value)
    assert "last samples: none" in str(failure.value)


def test_malformed_promql_fails_at_once_naming_the_prometheus_error(demo: Demo) -> None:
    started = time.monotonic()
    with pytest.raises(QueryFailed) as failure:
        query(PrometheusQuery(url=demo.url, query="sum(demo_queue_depth"), retry_delay_seconds=5)

    message = str(failure.value)
    assert "bad_data" in message
    assert "parse error" in message
    assert not failure.value.transient
    # Not retried: a retry would have waited five seconds first.
    assert time.monotonic() - started < 5


def test_a_malformed_query_ends_a_wait_at_once(demo: Demo) -> None:
    started = time.monotonic()
    with pytest.raises(QueryFailed, match="bad_data"):
        wait_until(WaitUntil(url=demo.url, query="demo_queue_depth <", within_seconds=30))

    assert time.monotonic() - started < 5


def test_an_unreachable_prometheus_is_a_transient_failure(prefect_api_url: str) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(QueryFailed, match="ConnectError") as failure:
        query(PrometheusQuery(url=unreachable, query="up"), retry_delay_seconds=0)

    assert failure.value.transient
