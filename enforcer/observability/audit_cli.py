"""The audit parts of the command line.

    enforcer serve ... [--audit-file PATH] [--audit-chain] [--audit-checkpoint-key FILE] ...
    enforcer audit verify FILE... [--public-key FILE]
    enforcer audit show FILE... [--sub S] [--client-id C] [--decision allow|deny] [--since T] [--until T] [--json]

``verify`` is for a machine or an auditor: exit 0 with ``ok: N records``, or exit 1 naming
the first broken line as ``FILE:LINE: problem``. ``show`` is for a person reading the trail:
one line per record, values with control characters escaped (a request path is chosen by
the caller, and must not be able to move the reader's cursor or recolour the terminal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from enforcer.observability.audit import OVERFLOW_POLICIES, AuditSettings
from enforcer.observability.auditchain import CHECKPOINT, CheckpointKey, CheckpointSigner, order_files, verify_files
from enforcer.observability.auditsinks import FSYNC_MODES
from enforcer.policy.checks import is_loopback_host

# -- enforcer serve --audit-* -------------------------------------------------------------


def add_serve_audit_options(serve: argparse.ArgumentParser) -> None:
    defaults = AuditSettings()
    group = serve.add_argument_group("audit trail", "one JSON line per request, to stdout and/or a file "
                                                    "and/or a webhook")
    group.add_argument("--no-audit-stdout", dest="audit_stdout", action="store_false",
                       help="do not write audit records to stdout (on by default)")
    group.add_argument("--audit-file", metavar="PATH", help="append audit records to this file (created 0600)")
    group.add_argument("--audit-max-bytes", type=int, default=defaults.file_max_bytes, metavar="N",
                       help="rotate the file past this size: PATH -> PATH.1 -> PATH.2 (0: never; "
                            "default %(default)s)")
    group.add_argument("--audit-backups", type=int, default=defaults.file_backups, metavar="N",
                       help="rotated files to keep (default %(default)s)")
    group.add_argument("--audit-fsync", choices=FSYNC_MODES, default=defaults.fsync,
                       help="always: each record; batch: each batch written (default); never: leave it to the OS")
    group.add_argument("--audit-webhook", metavar="URL", help="POST batches of records (NDJSON) to this URL")
    group.add_argument("--audit-webhook-batch", type=int, default=defaults.webhook_batch, metavar="N",
                       help="records per POST (default %(default)s)")
    group.add_argument("--audit-overflow", choices=OVERFLOW_POLICIES, default=defaults.overflow,
                       help="when the queue is full: block (requests wait, nothing lost; default) or drop "
                            "(counted in enforcer_audit_records_total)")
    group.add_argument("--audit-queue-size", type=int, default=defaults.queue_size, metavar="N",
                       help="records waiting to be written (default %(default)s)")
    group.add_argument("--audit-chain", action="store_true",
                       help="add prev and hash to every record: a SHA-256 chain that 'enforcer audit verify' checks")
    group.add_argument("--audit-checkpoint-key", metavar="FILE",
                       help="Ed25519 private key (JWK or PEM) that signs a checkpoint of the chain head")
    group.add_argument("--audit-checkpoint-every", type=int, default=defaults.checkpoint_every, metavar="N",
                       help="records between checkpoints (default %(default)s; one more at shutdown)")
    group.add_argument("--audit-drain-seconds", type=float, default=defaults.drain_seconds, metavar="S",
                       help="at shutdown, how long to keep writing queued records before counting the rest "
                            "as failed (default %(default)s)")


def audit_settings(args: argparse.Namespace) -> AuditSettings:
    return AuditSettings(
        stdout=args.audit_stdout, file=args.audit_file, file_max_bytes=args.audit_max_bytes,
        file_backups=args.audit_backups, fsync=args.audit_fsync, webhook_url=args.audit_webhook,
        webhook_batch=args.audit_webhook_batch, queue_size=args.audit_queue_size, overflow=args.audit_overflow,
        chain=args.audit_chain, checkpoint_key=args.audit_checkpoint_key,
        checkpoint_every=args.audit_checkpoint_every, drain_seconds=args.audit_drain_seconds)


def audit_problem(settings: AuditSettings) -> str | None:
    """The first reason these settings cannot work, found before serving (the key loads, the
    file opens), or None."""
    for flag, value in (("--audit-queue-size", settings.queue_size),
                        ("--audit-checkpoint-every", settings.checkpoint_every),
                        ("--audit-webhook-batch", settings.webhook_batch)):
        if value < 1:
            return f"{flag} must be at least 1"
    if settings.file_max_bytes < 0 or settings.file_backups < 0:
        return "--audit-max-bytes and --audit-backups cannot be negative"
    if settings.overflow not in OVERFLOW_POLICIES or settings.fsync not in FSYNC_MODES:
        return "unknown --audit-overflow or --audit-fsync value"
    if settings.checkpoint_key and not settings.chain:
        return "--audit-checkpoint-key signs the hash chain: add --audit-chain"
    if settings.webhook_url is not None:
        parts = urlsplit(settings.webhook_url)
        if not (parts.scheme == "https" and parts.hostname) and \
                not (parts.scheme == "http" and is_loopback_host(parts.hostname)):
            return "--audit-webhook must be an https URL (plain http is accepted only for loopback hosts)"
    try:
        if settings.checkpoint_key:
            CheckpointSigner.from_file(settings.checkpoint_key)
        if settings.file:
            os.close(os.open(settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


# -- enforcer audit verify | show ---------------------------------------------------------


def add_audit_commands(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="check and read audit files").add_subparsers(metavar="ACTION")

    verify = audit.add_parser("verify", help="check the hash chain (and checkpoint signatures); exit 1 naming "
                                             "the first broken record")
    verify.add_argument("files", nargs="+", metavar="FILE",
                        help="audit files; rotated ones (PATH.N ... PATH.1 PATH) are put oldest first")
    verify.add_argument("--public-key", metavar="FILE",
                        help="Ed25519 public key (JWK or PEM): every checkpoint must verify with it and "
                             "cover every record")
    verify.set_defaults(run=_verify)

    show = audit.add_parser("show", help="print records for a person, filtered")
    show.add_argument("files", nargs="+", metavar="FILE")
    show.add_argument("--sub")
    show.add_argument("--client-id")
    show.add_argument("--decision", choices=["allow", "deny"])
    show.add_argument("--since", type=_instant, metavar="TIME", help="ISO 8601 (UTC unless it names a zone)")
    show.add_argument("--until", type=_instant, metavar="TIME")
    show.add_argument("--json", action="store_true", help="print the matching lines as they are stored")
    show.set_defaults(run=_show)


def _verify(args: argparse.Namespace) -> int:
    try:
        key = CheckpointKey.from_file(args.public_key) if args.public_key else None
        result = verify_files(order_files(args.files), key)
    except (OSError, ValueError) as exc:
        print(f"enforcer audit verify: {exc}", file=sys.stderr)
        return 2
    if result.broken is not None:
        print(result.broken, file=sys.stderr)
        print(f"broken after {result.records} good record(s)", file=sys.stderr)
        return 1
    notes = [f"{result.checkpoints} checkpoint(s)"]
    notes.append(f"signatures verified with key {key.key_id}" if key else "signatures not checked (no --public-key)")
    if result.records and not result.from_genesis:
        notes.append("the first record continues an earlier chain (older files are not here)")
    print(f"ok: {result.records} records; " + "; ".join(notes))
    return 0


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _documents(paths: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(stored line, parsed object) for every readable line; others are reported and skipped."""
    for path in order_files(paths):
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                try:
                    document = json.loads(line)
                except ValueError:
                    document = None
                if not isinstance(document, dict):
                    print(f"{path}:{number}: not a JSON record (skipped)", file=sys.stderr)
                    continue
                yield line, document


def _matches(document: dict[str, Any], args: argparse.Namespace) -> bool:
    is_checkpoint = document.get("type") == CHECKPOINT
    if args.sub is not None or args.client_id is not None or args.decision is not None:
        if is_checkpoint or (args.sub is not None and document.get("sub") != args.sub) or \
                (args.client_id is not None and document.get("client_id") != args.client_id) or \
                (args.decision is not None and document.get("decision") != args.decision):
            return False
    if args.since is not None or args.until is not None:
        try:
            moment = _instant(str(document.get("time")))
        except argparse.ArgumentTypeError:
            return False
        if (args.since is not None and moment < args.since) or (args.until is not None and moment > args.until):
            return False
    return True


def _show(args: argparse.Namespace) -> int:
    shown = 0
    try:
        for line, document in _documents(args.files):
            if _matches(document, args):
                print(_printable(line) if args.json else _one_line(document))
                shown += 1
    except BrokenPipeError:  # `| head` closed the pipe: not an error
        return 0
    except OSError as exc:
        print(f"enforcer audit show: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{shown} record(s)", file=sys.stderr)
    return 0


def _one_line(document: dict[str, Any]) -> str:
    get = document.get
    if get("type") == CHECKPOINT:
        return _printable(f"{get('time')}  checkpoint seq={get('seq')} hash={str(get('hash'))[:16]}... "
                          f"key_id={get('key_id')}")
    parts = [f"{get('time')}", f"{get('decision')!s:<5}", f"{get('status')!s:>3}",
             f"{get('reason')!s:<20}", f"{get('method')} {get('path') or '-'}",
             f"sub={get('sub') or '-'}", f"client_id={get('client_id') or '-'}"]
    if get("act"):
        parts.append(f"act={json.dumps(get('act'), separators=(',', ':'))}")
    if get("scope"):
        parts.append(f"scope={json.dumps(get('scope'), ensure_ascii=False)}")
    parts += [f"rule={get('rule') or '-'}", f"resource={get('resource') or '-'}", f"request_id={get('request_id')}"]
    return _printable("  ".join(parts))


def _printable(text: str) -> str:
    """Control and other non-printing characters as escapes: what a person sees is what is stored."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
