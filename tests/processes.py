"""Server processes the tests start as an operator would: `internal-dns serve`, `twistd`.

Made so that a busy machine cannot make a test fail that a quiet one passes:

- each process runs in a session of its own, and stopping it signals the whole session, so what
  it started (a supervisor's workers) never outlives the test to answer on another test's port;
- its output goes to files, not pipes, so a talkative server never blocks on a full pipe;
- a port picked free can be taken by another program before the server binds it: the server is
  then started again on another (`serve`), instead of the test failing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import pytest

from bench.peers import free_port
from tests.dnsclient import Reply

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
INTERNAL_DNS = str(BIN / "internal-dns")
TWISTD = str(BIN / "twistd")
START_WAIT = 60.0  # seconds a started process may take to answer (a loaded machine is slow)
STOP_WAIT = 15.0
ATTEMPTS = 5  # ports tried before giving up


class PortTaken(Exception):
    """The server could not bind: another program took the port after it was picked."""


class Process:
    """A started command, its standard output and error kept in files next to each other."""

    def __init__(self, args: list[str], folder: Path, name: str = "process", env: dict[str, str] | None = None):
        self.args = args
        n = 0
        while (folder / f"{name}-{n}.out").exists():
            n += 1
        self.out_path, self.err_path = folder / f"{name}-{n}.out", folder / f"{name}-{n}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err, start_new_session=True, env=env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end; (standard output, standard error)."""
        self.popen.wait(timeout)
        return self.stdout(), self.stderr()

    def kill_all(self) -> None:
        """Stop the process and whatever it started (its whole session): politely, then not."""
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever outlived it
        except ProcessLookupError:
            pass
        self.popen.wait()


def eventually(condition: Callable[[], Any], what: str, seconds: float = 15.0, every: float = 0.05) -> Any:
    """condition()'s first true value, asked every `every` seconds; the test fails after `seconds`.
    For what another process does in its own time (a real clock, not the test's)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def ask(port: int, name: str, rdtype: str = "AAAA", timeout: float = 0.5, host: str = "127.0.0.1") -> Reply:
    query = dns.message.make_query(name, rdtype)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.to_wire(), (host, port))
        wire, _ = sock.recvfrom(65535)
    return Reply.decode(wire)


def wait_until_answering(proc: Process, port: int, name: str = "my-app.internal") -> Reply:
    """Poll with a query until the process answers (bounded); PortTaken if it exits because its
    port was taken, a failure if it exits otherwise."""
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            if "Address already in use" in out + err:
                raise PortTaken(err)
            pytest.fail(f"exited with {proc.returncode} before answering:\n{out}\n{err}")
        if "Address already in use" in proc.stderr():  # a worker of a supervisor, which goes on
            proc.kill_all()
            raise PortTaken(proc.stderr())
        try:
            reply = ask(port, name)
        except (OSError, dns.exception.DNSException):  # not bound yet: refused or no reply
            time.sleep(0.1)
            continue
        if reply.rcode_text != "SERVFAIL":  # SERVFAIL until the first snapshot has loaded
            return reply
        time.sleep(0.1)
    pytest.fail(f"no answer on port {port} within {START_WAIT}s")


def wait_until_listening(proc: Process, port: int) -> None:
    """Until the process says it listens on `port` (for a server whose answers are not yet due)."""
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        log = proc.stdout() + proc.stderr()
        if "Address already in use" in log:
            proc.kill_all()
            raise PortTaken(log)
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before listening:\n{log}")
        if f" port {port} (UDP and TCP)" in log:
            return
        time.sleep(0.1)
    pytest.fail(f"not listening on port {port} within {START_WAIT}s")


def serve(
    processes: list[Process],
    folder: Path,
    config_for: Callable[[int], Path],
    command: Callable[[Path], list[str]] | None = None,
    ports: Callable[[], int] = free_port,
    env: dict[str, str] | None = None,
    answering: bool = True,
) -> tuple[Process, int]:
    """A server started on a free port and answering (or, `answering` off, listening): (its
    process, the port). `config_for(port)` writes its config; `command(config)` is what runs
    (default: `internal-dns serve -c`)."""
    for _ in range(ATTEMPTS):
        port = ports()
        config = config_for(port)
        args = command(config) if command is not None else [INTERNAL_DNS, "serve", "-c", str(config)]
        proc = Process(args, folder, name="server", env=env)
        processes.append(proc)
        try:
            if answering:
                wait_until_answering(proc, port)
            else:
                wait_until_listening(proc, port)
        except PortTaken:
            continue
        return proc, port
    pytest.fail(f"no free port could be kept in {ATTEMPTS} attempts")
