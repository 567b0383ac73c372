"""Process settings: where to listen, which policy files to load, where audit records go,
how long a stop may take."""

from __future__ import annotations

from dataclasses import dataclass, field

from enforcer.observability.audit import AuditSettings
from enforcer.policy.loader import Policy


@dataclass(frozen=True)
class Settings:
    policy_paths: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9090
    log_level: str = "info"
    replay_store: str = "memory"  # or a redis:// URL shared by every replica
    audit: AuditSettings = field(default_factory=AuditSettings)  # stdout only, unless told otherwise
    #: after SIGTERM/SIGINT: how long requests in flight may take to finish before they are cut
    #: (the audit queue is drained afterwards, for at most ``audit.drain_seconds`` more)
    shutdown_grace_seconds: float = 25.0
    workers: int = 1  # proxy processes (--workers); some policies need shared state between them
    #: TLS on the proxy listener (PEM files); with a client CA, client certificates are required
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None


def serving_problem(settings: Settings, policy: Policy) -> str | None:
    """Why these settings cannot serve ``policy`` safely, or None. Checked at start and again
    for every policy a reload would put in force: a reload must not open what a start refuses."""
    count = settings.workers
    if count < 1:
        return "at least one worker is needed"
    nonce_resources = [r.id for r in policy.resources if r.signatures is not None and r.signatures.require_nonce]
    if count > 1 and settings.replay_store == "memory" and nonce_resources:
        return (f"resources {', '.join(nonce_resources)} require signature nonces, and with --replay-store memory "
                "each worker would remember only its own, so a request could be replayed to another worker; "
                "use a redis:// replay store")
    session_resources = [r.id for r in policy.resources if (mcp := r.mcp_options) is not None and mcp.bind_sessions]
    if count > 1 and settings.replay_store == "memory" and session_resources:
        return (f"MCP resources {', '.join(session_resources)} bind sessions to their callers, and with "
                "--replay-store memory each worker would know only the sessions it saw issued, so the others "
                "would answer 404; use a redis:// replay store (or mcp: {bind_sessions: false})")
    if count > 1 and (settings.audit.file or settings.audit.chain):
        return ("every worker would append to, rotate and chain the same audit file on its own; "
                "send audit records to stdout or --audit-webhook instead")
    mtls_resources = [r.id for r in policy.resources if r.workload_identity is not None and r.workload_identity.mtls]
    if mtls_resources and settings.tls_client_ca is None:
        return (f"resources {', '.join(mtls_resources)} take the workload identity from client certificates "
                "(workload_identity.mtls), which the listener asks for only with --tls-cert, --tls-key and "
                "--tls-client-ca")
    return None
