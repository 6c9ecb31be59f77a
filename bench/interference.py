"""What else had the server's core while a latency figure was taken.

On a small VM a tail latency is mostly the server's core being taken from it for a millisecond
or more: a kernel thread that wakes on that core (on the 2-core VM of docs/speed.md, DAMON's
`kdamond` every half second, `rcu_preempt`), or the hypervisor running something else on the
virtual CPU. At half load the queue that builds meanwhile takes about as long again to drain,
so a few such pauses a second decide the p99 of any server, dnsmasq's too. Read beside each
latency figure, so that a p99 can be told apart from the machine's own:

- the time the server's threads were ready to run and did not (the second field of
  `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds): another task had the core, or it was
  still waking from idle;
- the time the hypervisor took from the server's core (`steal` in `/proc/stat`, in ticks);
- how busy each of the two cores was (all but `idle` and `iowait`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import dnsperf, peers

TICK = 1 / os.sysconf("SC_CLK_TCK")  # seconds in one of /proc/stat's units
_IDLE, _IOWAIT, _STEAL = 3, 4, 7  # in a cpuN line, after the name: user nice system idle iowait irq softirq steal


@dataclass
class Interference:
    waited_ms: float  # the server ready to run and not running
    stolen_ms: float  # the hypervisor's, on the server's core
    server_core_busy: float  # percent of the time, all but idle and iowait
    load_core_busy: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"its core busy {self.server_core_busy:.0f}%, stolen {self.stolen_ms:.0f} ms; the server ready and "
            f"not running {self.waited_ms:.0f} ms; dnsperf's core busy {self.load_core_busy:.0f}%"
        )


def run_queue_wait_ns(schedstats: list[str]) -> int:
    """Nanoseconds spent ready to run but not running, summed over threads' schedstat lines
    ("<on cpu ns> <waiting ns> <timeslices>")."""
    return sum(int(text.split()[1]) for text in schedstats if text.strip())


def cpu_ticks(proc_stat: str, cpu: int) -> list[int]:
    """The `cpuN` line of /proc/stat: its first eight counters, in ticks."""
    for line in proc_stat.splitlines():
        if line.startswith(f"cpu{cpu} "):
            return [int(field) for field in line.split()[1:9]]
    raise ValueError(f"/proc/stat has no line for cpu{cpu}")


def busy_percent(before: list[int], after: list[int]) -> float:
    deltas = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(deltas)
    return 100.0 * (total - deltas[_IDLE] - deltas[_IOWAIT]) / total if total else 0.0


def _schedstats(pid: int) -> list[str]:
    texts = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            texts.append((task / "schedstat").read_text())
        except OSError:
            continue  # a thread that ended meanwhile
    return texts


@contextmanager
def watching(pid: int, server_cpu: int = int(peers.SERVER_CPU), load_cpu: int = int(dnsperf.LOAD_CPU)) -> Iterator[Interference]:
    """Filled in when the block is done: what the server's core went through meanwhile."""
    found = Interference(0.0, 0.0, 0.0, 0.0)
    stat = Path("/proc/stat")
    first, waited_before = stat.read_text(), run_queue_wait_ns(_schedstats(pid))
    yield found
    last, waited_after = stat.read_text(), run_queue_wait_ns(_schedstats(pid))
    server_before, server_after = cpu_ticks(first, server_cpu), cpu_ticks(last, server_cpu)
    found.waited_ms = round((waited_after - waited_before) / 1e6, 1)
    found.stolen_ms = round((server_after[_STEAL] - server_before[_STEAL]) * TICK * 1000, 1)
    found.server_core_busy = round(busy_percent(server_before, server_after), 1)
    found.load_core_busy = round(busy_percent(cpu_ticks(first, load_cpu), cpu_ticks(last, load_cpu)), 1)
