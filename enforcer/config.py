"""Process settings: where to listen, which policy files to load, where audit records go,
how long a stop may take."""

from __future__ import annotations

from dataclasses import dataclass, field

from enforcer.observability.audit import AuditSettings


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
