"""Running dnsperf and reading its report."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOAD_CPU = "0"  # the load generator's core; the servers get the other one


@dataclass
class Result:
    qps: float
    sent: int
    completed: int
    lost: int
    mean_ms: float
    max_ms: float
    rcodes: dict[str, int] = field(default_factory=dict)
    percentiles_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus is not None and shutil.which("taskset") else []


def run(
    port: int,
    queries: Path,
    *,
    seconds: float,
    tcp: bool = False,
    clients: int = 8,
    outstanding: int = 400,
    max_qps: int | None = None,
    verbose: bool = False,
    passes: int | None = None,
    cpus: str | None = LOAD_CPU,
    source: str | None = None,
    timeout: float = 2.0,
) -> Result:
    """One dnsperf run against 127.0.0.1:port (from `source`, when given); with `verbose`,
    latency percentiles too."""
    command = [
        *taskset(cpus),
        "dnsperf",
        *(["-a", source] if source is not None else []),
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(queries),
        "-c",
        str(clients),
        "-q",
        str(outstanding),
        "-t",
        f"{timeout:g}",
        "-m",
        "tcp" if tcp else "udp",
    ]
    command += ["-n", str(passes)] if passes is not None else ["-l", str(seconds)]
    if max_qps is not None:
        command += ["-Q", str(max_qps)]
    if verbose:
        command.append("-v")
    # The report goes to a file, read once dnsperf is done: with -v it is a line per query (tens of
    # megabytes at half load), and reading that from a pipe while the run goes on kept this
    # unpinned process busy on either core, the server's too, lengthening the latency it measured.
    with tempfile.TemporaryFile(mode="w+") as report:
        done = subprocess.run(command, stdout=report, stderr=subprocess.PIPE, text=True, check=False, timeout=seconds + 60)
        report.seek(0)
        text = report.read()
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({done.returncode}): {done.stderr.strip() or text[-500:]}")
    return parse(text, verbose)


_NUMBER = r"([0-9.]+)"


def parse(report: str, verbose: bool = False) -> Result:
    def number(label: str) -> float:
        found = re.search(rf"{label}:\s+{_NUMBER}", report)
        if found is None:
            raise RuntimeError(f"dnsperf report has no '{label}':\n{report[-1500:]}")
        return float(found.group(1))

    latency = re.search(rf"Average Latency \(s\):\s+{_NUMBER} \(min {_NUMBER}, max {_NUMBER}\)", report)
    rcodes_line = re.search(r"Response codes:\s+(.*)", report)
    rcodes = {}
    if rcodes_line is not None:
        for part in rcodes_line.group(1).split(","):
            code, count = part.split()[:2]
            rcodes[code] = int(count)
    result = Result(
        qps=number("Queries per second"),
        sent=int(number("Queries sent")),
        completed=int(number("Queries completed")),
        lost=int(number("Queries lost")),
        mean_ms=float(latency.group(1)) * 1000 if latency else float("nan"),
        max_ms=float(latency.group(3)) * 1000 if latency else float("nan"),
        rcodes=rcodes,
    )
    if verbose:
        result.percentiles_ms = percentiles(latencies(report))
    return result


def latencies(report: str) -> list[float]:
    """Per-query latencies in seconds from dnsperf -v ('> NOERROR name type 0.000123')."""
    out = []
    for line in report.splitlines():
        if line.startswith("> "):
            try:
                out.append(float(line.rsplit(None, 1)[1]))
            except (IndexError, ValueError):
                continue
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return {"p50": at(50), "p99": at(99), "p99.9": at(99.9)}
