"""`internal-dns serve | check`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from internal_dns import __version__
from internal_dns.config import Config, ConfigError, load_config
from internal_dns.crosscheck import cross_check
from internal_dns.ops.querylog import unwritable
from internal_dns.registry import plugins
from internal_dns.registry.catalog import Catalog
from internal_dns.registry.heap import collector_paused
from internal_dns.registry.kinds import BY_SECTION
from internal_dns.registry.model import RegistryError, Snapshot

if TYPE_CHECKING:
    from twisted.python.failure import Failure

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
    _registry_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "check":
        return run_check(args.config)
    if args.command == "registry":
        return run_registry(args)
    return run_serve(args.config, args.worker)


def _registry_parser(commands: Any) -> None:
    registry = commands.add_parser(
        "registry",
        help="list, change, import or export the registry, on whatever backend the config names",
        description="Every change is checked against the whole registry first, and refused (exit 1) when it would add a problem.",
    )
    registry.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    actions = registry.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one line per entity: kind, identity, and its fields as JSON")
    listing.add_argument("kind", nargs="?", help="only this kind: region, network, app, machine, peer")
    put = actions.add_parser("put", help="add an entity, or replace the one with its identity")
    put.add_argument("kind", help="region, network, app, machine or peer")
    put.add_argument("value", help="its fields as a YAML or JSON mapping, or - to read them from standard input")
    set_check = actions.add_parser("set-check", help="set one health check of a machine, the rest of it as it is")
    set_check.add_argument("machine", help="the machine's id")
    set_check.add_argument("check", help="the check's name")
    set_check.add_argument("status", help="passing, warning or critical; none removes the check")
    delete = actions.add_parser("delete", help="remove an entity")
    delete.add_argument("kind", help="region, network, app, machine or peer")
    delete.add_argument("name", help="its name (an id for a machine, a code for a region)")
    delete.add_argument("--network", help="the network of an app or a peer")
    imports = actions.add_parser("import", help="put every entity of a YAML file or folder (the files backend's format)")
    imports.add_argument("path", type=Path)
    imports.add_argument("--replace", action="store_true", help="and delete every entity the import lacks")
    export = actions.add_parser("export", help="the whole registry in the files backend's YAML format")
    export.add_argument("-o", "--output", type=Path, help="a file to write (default: standard output)")


def run_registry(args: argparse.Namespace) -> int:
    from internal_dns.registry import edit

    try:
        config = load_config(args.config)
        store = plugins.load(config.registry.backend).store(config.registry)
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "list":
            kind = edit.kind_of(args.kind) if args.kind else None
            for e in store.read():
                if e.kind in BY_SECTION and (kind is None or e.kind == kind):
                    described = edit.describe_identity(e.kind, edit.identity(e.kind, e.data), e.data)
                    print(f"{described} {json.dumps(e.data, sort_keys=True, default=str)}")
            return 0
        if args.action == "export":
            text = edit.export(store.read())
            if args.output is None:
                sys.stdout.write(text)
            else:
                args.output.write_text(text)
            return 0
        if args.action == "put":
            kind = edit.kind_of(args.kind)
            raw = sys.stdin.read() if args.value == "-" else args.value
            data = yaml.safe_load(raw)
            if not isinstance(data, dict):
                print(f"registry put: the value must be a mapping of fields, not {type(data).__name__}", file=sys.stderr)
                return 2
            change = edit.Change([(kind, data)], [])
        elif args.action == "set-check":
            status = None if args.status == "none" else args.status
            change = edit.check_change(store.read(), args.machine, args.check, status, store.describe())
        elif args.action == "delete":
            kind = edit.kind_of(args.kind)
            change = edit.Change([], [(kind, edit.named(kind, args.name, args.network))])
        else:
            change = edit.import_change(args.path, args.replace, store.read())
        for line in edit.apply(store, change):
            print(line)
        return 0
    except edit.Refused as exc:
        print("refused:\n" + "".join(f"  {line}\n" for line in exc.lines), end="", file=sys.stderr)
        return 1
    except RegistryError as exc:  # the store's own content cannot be read (a YAML error, ...)
        print(str(exc), file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"registry {args.action}: {exc}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:
        print(f"registry {args.action}: not valid YAML: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the store is unreachable, most often
        print(f"registry {args.action}: {store.describe()}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    finally:
        store.close()


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
        f"{path}: ok; registry {plugins.where(config.registry)}: {counts['networks']} networks, {counts['apps']} apps, "
        f"{counts['machines']} machines, {counts['peers']} peers, {counts['regions']} regions"
    )
    return 0


def load_registry(config: Config) -> Snapshot:
    """The registry the config names, read whole through its backend's Store and checked
    strictly: every entity that does not fit is a problem."""
    store = plugins.load(config.registry.backend).store(config.registry)
    with collector_paused():  # millions of small objects, as when a server builds a snapshot (heap.py)
        try:
            if not getattr(store, "exists", lambda: True)():  # a store `registry import` would create
                raise RegistryError([f"{store.describe()}: no registry there yet"])
            entities = store.read()
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError([f"{store.describe()}: cannot be read ({type(exc).__name__}: {exc})"]) from exc
        finally:
            store.close()
        catalog = Catalog()
        snapshot = catalog.load(entities)
    if catalog.problem_lines():
        raise RegistryError(catalog.problem_lines())
    return snapshot


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
        from internal_dns.ops.workers import Supervisor

        return Supervisor(path, config.workers, log=_supervisor_log).run()

    def load() -> Config:  # what SIGHUP reads again
        fresh = load_config(path)
        if worker is not None:
            from internal_dns.ops.workers import worker_config

            fresh = worker_config(fresh, worker)
        return fresh

    if worker is not None:
        from internal_dns.ops.workers import worker_config

        config = worker_config(config, worker)
    return _serve(config, load)


def _supervisor_log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"{stamp} [internal_dns.ops.workers#info] {line}", file=sys.stderr, flush=True)


def _serve(config: Config, load: Callable[[], Config]) -> int:
    from twisted.internet import reactor as installed
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from internal_dns.server import DnsService
    from internal_dns.transport import fastpoll

    # To mypy twisted.internet.reactor is a module without attributes (the reactor object is put in
    # its place when installed), and the calls below span several reactor interfaces: Any, once.
    reactor: Any = installed
    fastpoll.install(reactor)  # UDP listeners read without a logging context a wake-up

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    log_warnings(config)
    try:
        service = DnsService(config, reactor, load=load)
    except Exception as exc:  # a third-party backend that cannot be made, most often
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    exit_code = [0]
    started: list[bool] = []  # stopped at shutdown once starting has begun, even if it failed

    def cannot_start(exc: BaseException | None) -> None:  # a listener that cannot bind, most often
        print(f"cannot start: {exc}", file=sys.stderr)
        exit_code[0] = 1
        reactor.stop()

    def failed(failure: Failure) -> None:
        cannot_start(failure.value)

    def start() -> None:
        started.append(True)
        try:
            ready = service.start()  # binds once the registry has loaded: later
        except Exception as exc:
            cannot_start(exc)
            return
        ready.addErrback(failed)

    stopping: list[int] = []

    def on_signal(signum: int, _: Any) -> None:
        if not stopping:  # a second signal while stopping changes nothing
            stopping.append(signum)
            reactor.callFromThread(reactor.stop)

    def on_hangup(signum: int, _: Any) -> None:
        if not stopping:
            reactor.callFromThread(service.reload)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: service.stop() if started else None)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)  # reload; never the end of the process
    reactor.run(installSignalHandlers=False)
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
