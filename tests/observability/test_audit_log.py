"""The audit log's writing side: record shape, the file sink (rotation, fsync, permissions),
the bounded queue (block, drop, drain) and the settings a user gives ``enforcer serve``."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from enforcer.observability.audit import AUDIT_FIELDS, AuditLog, AuditSettings, build_audit_log
from enforcer.observability.audit_cli import audit_problem
from enforcer.observability.auditchain import HashChain, encode_line, order_files, verify_files
from enforcer.observability.auditsinks import FileSink
from enforcer.observability.metrics import Metrics
from tests.observability.helpers import ed25519_files, lines_of, record, run_log


def audit_count(metrics: Metrics, sink: str, result: str) -> float:
    value = metrics.registry.get_sample_value("enforcer_audit_records_total", {"sink": sink, "result": result})
    return value or 0.0


class GatedSink:
    """A sink (the ``AuditSink`` protocol) that keeps what it is given, and writes only while
    its gate is open: a stand-in for a disk or collector that has stalled."""

    name = "gated"
    batch_size = 1000

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.gate = asyncio.Event()

    async def write(self, lines: list[bytes]) -> None:
        await self.gate.wait()
        self.lines += lines

    async def close(self) -> None:
        return None


def request_ids(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["request_id"] for line in lines]


# -- record shape -------------------------------------------------------------------------


def test_a_record_has_exactly_the_documented_fields() -> None:
    assert tuple(record(1)) == AUDIT_FIELDS


def test_a_chained_record_adds_prev_and_hash_only(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    run_log(build_audit_log(AuditSettings(stdout=False, file=str(path), chain=True)), [record(n) for n in range(3)])
    written = lines_of(path)
    assert [tuple(document) for document in written] == [(*AUDIT_FIELDS, "prev", "hash")] * 3
    assert written[0]["prev"] == "0" * 64
    assert [document["prev"] for document in written[1:]] == [document["hash"] for document in written[:-1]]


def test_without_chain_the_file_holds_exactly_the_documented_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    run_log(build_audit_log(AuditSettings(stdout=False, file=str(path))), [record(n) for n in range(3)])
    assert [tuple(document) for document in lines_of(path)] == [AUDIT_FIELDS] * 3


# -- the file sink ------------------------------------------------------------------------


def test_file_is_created_owner_only_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"earlier":"line"}\n')
    path.chmod(0o600)
    run_log(AuditLog([FileSink(str(path))]), [record(1)])
    assert path.read_bytes().startswith(b'{"earlier":"line"}\n')
    assert request_ids(path.read_bytes().splitlines()[1:]) == ["req-00001"]
    fresh = tmp_path / "fresh.log"
    run_log(AuditLog([FileSink(str(fresh))]), [record(1)])
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_rotation_keeps_every_line_in_order_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    max_bytes = 3000  # five records per file
    run_log(AuditLog([FileSink(str(path), max_bytes=max_bytes, backups=100)]), [record(n) for n in range(60)])
    files = order_files([str(p) for p in tmp_path.iterdir()])
    assert len(files) > 10 and files[-1] == str(path) and files[0] == f"{path}.{len(files) - 1}"
    lines = [line for name in files for line in Path(name).read_bytes().splitlines()]
    assert request_ids(lines) == [f"req-{n:05d}" for n in range(60)]
    for name in files:
        assert 0 < os.path.getsize(name) <= max_bytes
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600


def test_rotation_deletes_only_files_beyond_the_backup_count(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    run_log(AuditLog([FileSink(str(path), max_bytes=3000, backups=2)]), [record(n) for n in range(60)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1", "audit.log.2"]
    files = order_files([str(p) for p in tmp_path.iterdir()])
    ids = request_ids([line for name in files for line in Path(name).read_bytes().splitlines()])
    assert ids == [f"req-{n:05d}" for n in range(60 - len(ids), 60)]  # the newest, contiguous


def test_a_record_larger_than_max_bytes_still_gets_written_alone(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    run_log(AuditLog([FileSink(str(path), max_bytes=100, backups=5)]), [record(n) for n in range(3)])
    files = order_files([str(p) for p in tmp_path.iterdir()])
    assert [len(Path(name).read_bytes().splitlines()) for name in files] == [1, 1, 1]


@pytest.mark.parametrize(("mode", "during", "after_close"), [("always", 10, 11), ("batch", 1, 2), ("never", 0, 1)])
def test_fsync_modes(tmp_path: Path, mode: str, during: int, after_close: int) -> None:
    sink = FileSink(str(tmp_path / "audit.log"), fsync=mode)
    lines = [encode_line(record(n)) for n in range(10)]

    async def main() -> tuple[int, int]:
        await sink.write(lines)
        synced = sink.fsyncs
        await sink.close()
        return synced, sink.fsyncs

    assert asyncio.run(main()) == (during, after_close)
    assert (tmp_path / "audit.log").read_bytes() == b"".join(lines)


def test_fsync_at_rotation_even_in_never_mode(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "audit.log"), fsync="never", max_bytes=1200, backups=10)
    asyncio.run(sink.write([encode_line(record(n)) for n in range(10)]))
    rotations = len(list(tmp_path.iterdir())) - 1
    assert rotations == 4 and sink.fsyncs == rotations


def test_unknown_fsync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        FileSink(str(tmp_path / "audit.log"), fsync="sometimes")


def test_a_torn_last_line_is_ended_before_appending(tmp_path: Path) -> None:
    """A crash in the middle of a write leaves half a line; the next record starts its own
    line, the chain continues from the last whole record, and verify names the torn line."""
    path = tmp_path / "audit.log"
    settings = AuditSettings(stdout=False, file=str(path), chain=True)
    run_log(build_audit_log(settings), [record(n) for n in range(3)])
    with path.open("ab") as handle:
        handle.write(encode_line(record(99))[:50])
    run_log(build_audit_log(settings), [record(n) for n in range(3, 5)])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 6 and lines[3] == encode_line(record(99))[:50]
    assert json.loads(lines[4])["prev"] == json.loads(lines[2])["hash"]
    broken = verify_files([str(path)]).broken
    assert broken is not None and (broken.line, broken.problem) == (4, "not a JSON line")


# -- the queue ----------------------------------------------------------------------------


def test_close_drains_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    metrics = Metrics()
    log = AuditLog([FileSink(str(path))], queue_size=5000, metrics=metrics)
    run_log(log, [record(n) for n in range(3000)])
    assert request_ids(path.read_bytes().splitlines()) == [f"req-{n:05d}" for n in range(3000)]
    assert audit_count(metrics, "file", "written") == 3000


def test_drop_policy_counts_what_did_not_fit() -> None:
    sink, metrics = GatedSink(), Metrics()
    log = AuditLog([sink], queue_size=5, overflow="drop", metrics=metrics)

    async def main() -> None:
        await log.start()
        for n in range(50):  # submit never waits under drop: nothing else runs in between
            await log.submit(record(n))
        assert audit_count(metrics, "gated", "dropped") == 45
        sink.gate.set()
        await log.close()

    asyncio.run(main())
    assert request_ids(sink.lines) == [f"req-{n:05d}" for n in range(5)]
    assert audit_count(metrics, "gated", "written") == 5


def test_block_policy_makes_submit_wait_and_loses_nothing() -> None:
    sink, metrics = GatedSink(), Metrics()
    log = AuditLog([sink], queue_size=3, metrics=metrics)

    async def main() -> int:
        await log.start()
        submitted = 0
        while True:  # fill the queue and the sink's lane until a submit has to wait
            waiting = asyncio.ensure_future(log.submit(record(submitted)))
            await asyncio.sleep(0.02)
            submitted += 1
            if not waiting.done():
                break
            assert submitted < 100, "submit never waited"
        await asyncio.sleep(0.3)
        assert not waiting.done() and sink.lines == []
        sink.gate.set()
        await asyncio.wait_for(waiting, 5)
        await log.close()
        return submitted

    submitted = asyncio.run(main())
    assert request_ids(sink.lines) == [f"req-{n:05d}" for n in range(submitted)]
    assert audit_count(metrics, "gated", "dropped") == 0


def test_a_stalled_sink_does_not_hold_back_another_under_drop(tmp_path: Path) -> None:
    stalled, path, metrics = GatedSink(), tmp_path / "audit.log", Metrics()
    log = AuditLog([stalled, FileSink(str(path))], queue_size=10, overflow="drop", metrics=metrics)

    async def written(expected: int) -> int:
        for _ in range(1000):
            if audit_count(metrics, "file", "written") == expected:
                break
            await asyncio.sleep(0.002)
        return len(path.read_bytes().splitlines())

    async def main() -> list[int]:
        await log.start()
        counts = []
        for n in range(40):
            await log.submit(record(n))
            counts.append(await written(n + 1))
        stalled.gate.set()
        await log.close()
        return counts

    assert asyncio.run(main()) == list(range(1, 41))  # the file kept up, record by record
    assert audit_count(metrics, "file", "dropped") == 0
    assert (audit_count(metrics, "gated", "written"), audit_count(metrics, "gated", "dropped")) == (10, 30)
    assert request_ids(stalled.lines) == [f"req-{n:05d}" for n in range(10)]


# -- settings -----------------------------------------------------------------------------


def test_no_sink_means_no_audit_log() -> None:
    assert build_audit_log(AuditSettings(stdout=False)) is None
    log = build_audit_log(AuditSettings())
    assert log is not None and log.sink_names() == ["stdout"]


def test_sinks_from_settings(tmp_path: Path) -> None:
    log = build_audit_log(AuditSettings(file=str(tmp_path / "a.log"), webhook_url="http://127.0.0.1:9/in"))
    assert log is not None and log.sink_names() == ["stdout", "file", "webhook"]
    asyncio.run(log.close())


def test_chain_resumes_where_the_file_ends(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    settings = AuditSettings(stdout=False, file=str(path), chain=True)
    run_log(build_audit_log(settings), [record(n) for n in range(5)])
    run_log(build_audit_log(settings), [record(n) for n in range(5, 9)])
    result = verify_files([str(path)])
    assert (result.records, result.from_genesis, result.broken) == (9, True, None)


@pytest.mark.parametrize(("change", "problem"), [
    ({"queue_size": 0}, "--audit-queue-size must be at least 1"),
    ({"checkpoint_every": 0}, "--audit-checkpoint-every must be at least 1"),
    ({"file_backups": -1}, "--audit-max-bytes and --audit-backups cannot be negative"),
    ({"checkpoint_key": "k.jwk"}, "--audit-checkpoint-key signs the hash chain: add --audit-chain"),
    ({"webhook_url": "http://collector.example/in"},
     "--audit-webhook must be an https URL (plain http is accepted only for loopback hosts)"),
    ({"webhook_url": "ftp://127.0.0.1/in"},
     "--audit-webhook must be an https URL (plain http is accepted only for loopback hosts)"),
])
def test_settings_problems(change: dict[str, object], problem: str) -> None:
    assert audit_problem(AuditSettings(**change)) == problem  # type: ignore[arg-type]


def test_settings_problems_with_files(tmp_path: Path) -> None:
    keys = ed25519_files(tmp_path)
    assert audit_problem(AuditSettings(chain=True, checkpoint_key=str(keys.private), file=str(tmp_path / "a.log"),
                                       webhook_url="https://collector.example/in")) is None
    public = audit_problem(AuditSettings(chain=True, checkpoint_key=str(keys.public)))
    assert public is not None and "give the private key" in public
    missing = audit_problem(AuditSettings(chain=True, checkpoint_key=str(tmp_path / "none.jwk")))
    assert missing is not None and "No such file" in missing
    unwritable = audit_problem(AuditSettings(file=str(tmp_path / "no-such-dir" / "a.log")))
    assert unwritable is not None and "No such file" in unwritable


def test_chain_head_is_shared_by_every_sink(tmp_path: Path) -> None:
    first, second = tmp_path / "one.log", tmp_path / "two.log"
    run_log(AuditLog([FileSink(str(first)), FileSink(str(second))], chain=HashChain()), [record(n) for n in range(4)])
    assert first.read_bytes() == second.read_bytes()
    assert verify_files([str(first)]).records == 4
