"""`internal-dns serve | check`."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from internal_dns import __version__
from internal_dns.config import Config, ConfigError, load_config
from internal_dns.crosscheck import cross_check
from internal_dns.querylog import unwritable
from internal_dns.registry.files import load_snapshot
from internal_dns.registry.model import RegistryError, Snapshot

DEFAULT_CONFIG = "config.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internal-dns", description="DNS for a platform's private network.")
    parser.add_argument("--version", action="version", version=f"internal-dns {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server in the foreground")
    serve.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the `workers:` supervisor
    check = commands.add_parser("check", help="validate the config and the registry; non-zero exit with the reasons")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return run_check(args.config)
    return run_serve(args.config, args.worker)


def run_check(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"config warning: {warning}", file=sys.stderr)
    problems = []
    if config.query_log is not None and config.query_log != "-":
        reason = unwritable(config.query_log)
        if reason is not None:
            problems.append(f"{config.path}: query_log: {reason}")
    try:
        snapshot = load_registry(config)
    except RegistryError as exc:
        for line in problems:
            print(f"config error: {line}", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    problems += cross_check(config, snapshot)
    for line in problems:
        print(f"config error: {line}", file=sys.stderr)
    if problems:
        return 1
    counts = snapshot.counts()
    print(
        f"{path}: ok; registry {config.registry.path}: {counts['networks']} networks, {counts['apps']} apps, "
        f"{counts['machines']} machines, {counts['peers']} peers, {counts['regions']} regions"
    )
    return 0


def load_registry(config: Config) -> Snapshot:
    if config.registry.backend != "files":
        raise RegistryError([f"{config.path}: registry.backend: unknown backend {config.registry.backend!r}"])
    return load_snapshot(config.registry.path)


def log_warnings(config: Config) -> None:
    from twisted.logger import Logger

    log = Logger(namespace="internal_dns.config")
    for warning in config.warnings:
        log.warn("config warning: {warning}", warning=warning)


def run_serve(path: str, worker: int | None = None) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1 and worker is None:
        from internal_dns.workers import Supervisor

        return Supervisor(path, config.workers, log=_supervisor_log).run()
    if worker is not None:
        from internal_dns.workers import worker_config

        config = worker_config(config, worker)
    return _serve(config)


def _supervisor_log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"{stamp} [internal_dns.workers#info] {line}", file=sys.stderr, flush=True)


def _serve(config: Config) -> int:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from internal_dns.server import DnsService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    log_warnings(config)
    try:
        service = DnsService(config, reactor)
    except Exception as exc:  # a third-party backend that cannot be made, most often
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    exit_code = [0]

    def start() -> None:
        try:
            service.startService()
        except Exception as exc:  # a listener that cannot bind, most often
            print(f"cannot start: {exc}", file=sys.stderr)
            exit_code[0] = 1
            reactor.stop()  # type: ignore[attr-defined]

    def on_signal(signum: int, _: Any) -> None:
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", lambda: service.stopService() if service.running else None)  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
