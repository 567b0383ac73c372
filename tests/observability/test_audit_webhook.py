"""The webhook sink against a real collector on 127.0.0.1 that can refuse or disappear."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from enforcer.observability.audit import AuditLog
from enforcer.observability.auditsinks import FileSink, WebhookSink
from enforcer.observability.metrics import Metrics
from tests.observability.helpers import Collector, record
from tests.support import free_port, serving


def expected(count: int) -> list[str]:
    return [f"req-{n:05d}" for n in range(count)]


def audit_count(metrics: Metrics, sink: str, result: str) -> float:
    value = metrics.registry.get_sample_value("enforcer_audit_records_total", {"sink": sink, "result": result})
    return value or 0.0


def quick_sink(url: str, **options: Any) -> WebhookSink:
    return WebhookSink(url, first_backoff=0.02, max_backoff=0.2, timeout=2, **options)


def test_every_record_arrives_in_batches_of_ndjson() -> None:
    collector = Collector()
    with serving(collector) as server:
        log = AuditLog([quick_sink(f"{server.url}/audit", batch_size=7)])

        async def main() -> None:
            await log.start()
            for n in range(100):
                await log.submit(record(n))
            await log.close()

        asyncio.run(main())
    assert collector.request_ids == expected(100)
    assert max(len(batch) for batch in collector.batches) == 7
    assert collector.content_types == {"application/x-ndjson"}


def test_a_refusing_collector_loses_nothing_under_block() -> None:
    collector = Collector(status=503)
    metrics = Metrics()
    with serving(collector) as server:
        log = AuditLog([quick_sink(f"{server.url}/audit", batch_size=10)], metrics=metrics)

        async def main() -> None:
            await log.start()
            for n in range(30):
                await log.submit(record(n))
            await asyncio.sleep(1.0)
            assert collector.batches == [] and collector.refused >= 4  # retried, with backoff
            collector.status = 200
            await log.close()

        asyncio.run(main())
    assert collector.request_ids == expected(30)
    assert audit_count(metrics, "webhook", "written") == 30 and audit_count(metrics, "webhook", "failed") == 0


def test_shutdown_waits_for_a_dead_collector_only_as_long_as_drain_seconds() -> None:
    # under block nothing is dropped while running; at shutdown the wait is bounded and what
    # could not be written is counted as failed (never silently lost)
    collector = Collector(status=503)
    metrics = Metrics()
    with serving(collector) as server:
        log = AuditLog([quick_sink(f"{server.url}/audit", batch_size=10)], metrics=metrics, drain_seconds=0.5)

        async def main() -> float:
            await log.start()
            for n in range(30):
                await log.submit(record(n))
            started = time.monotonic()
            await log.close()
            return time.monotonic() - started

        elapsed = asyncio.run(main())
    assert 0.4 <= elapsed < 3
    assert collector.batches == []
    assert audit_count(metrics, "webhook", "failed") == 30 and audit_count(metrics, "webhook", "written") == 0


def test_a_collector_that_goes_away_and_comes_back_loses_nothing_and_requests_wait() -> None:
    """The collector stops; the queue fills; ``submit`` waits (the request would wait);
    the collector starts again on the same port and gets every record, in order."""
    collector = Collector()
    port = free_port()
    url = f"http://127.0.0.1:{port}/audit"
    log = AuditLog([quick_sink(url, batch_size=5)], queue_size=5)

    async def main() -> int:
        await log.start()
        with serving(collector, port=port):
            for n in range(10):
                await log.submit(record(n))
            for _ in range(200):
                if len(collector.request_ids) == 10:
                    break
                await asyncio.sleep(0.01)
        submitted = 10
        while True:  # the collector is gone: records pile up until submit has to wait
            waiting = asyncio.ensure_future(log.submit(record(submitted)))
            await asyncio.sleep(0.02)
            submitted += 1
            if not waiting.done():
                break
            assert submitted < 200, "submit never waited"
        await asyncio.sleep(0.5)
        assert not waiting.done()
        with serving(collector, port=port):
            await asyncio.wait_for(waiting, 10)
            await log.close()
        return submitted

    submitted = asyncio.run(main())
    assert collector.request_ids == expected(submitted)


def test_under_drop_a_batch_is_given_up_and_counted_failed(tmp_path: Any) -> None:
    collector = Collector(status=503)
    metrics = Metrics()
    path = tmp_path / "audit.log"
    with serving(collector) as server:
        log = AuditLog([quick_sink(f"{server.url}/audit", batch_size=10, attempts=3), FileSink(str(path))],
                       overflow="drop", metrics=metrics)

        async def main() -> None:
            await log.start()
            for n in range(20):
                await log.submit(record(n))
            started = time.monotonic()
            await log.close()
            assert time.monotonic() - started < 10

        asyncio.run(main())
    assert collector.refused == 3 * 2  # two batches, three attempts each
    assert audit_count(metrics, "webhook", "failed") == 20 and audit_count(metrics, "webhook", "written") == 0
    assert len(path.read_bytes().splitlines()) == 20  # the other sink is unaffected


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    sink = WebhookSink("http://127.0.0.1:1/", first_backoff=0.5, max_backoff=8)
    for attempt, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = {sink.backoff(attempt) for _ in range(50)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1  # jittered
