"""What the query path counts, as plain integers: cheap enough to touch for every query, and
shaped (flat lists, indexes into them) so that entries the collector does not track can name the
counters they add to. Turned into Prometheus families only when scraped, by each part's own
`collect()`.

Labels stay bounded: a configured zone or `forward` (or `invalid` for what does not parse), a
fixed list of types plus `other`, rcode names.
"""

from __future__ import annotations

from bisect import bisect_left

TYPE_NAMES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    43: "DS",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
    257: "CAA",
}
RCODE_NAMES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
    16: "BADVERS",
}
# Seconds: from a cached answer (tens of microseconds) to an upstream at its deadline.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FORWARD = "forward"
INVALID = "invalid"


def type_label(qtype: int) -> str:
    return TYPE_NAMES.get(qtype, "other")


def rcode_label(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, "other")


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[0 if seconds <= self.bounds[0] else bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):  # counts has one more: past every bound
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class QueryCounters:
    """Everything the query path counts: one counter per (zone, type, transport, rcode, whether
    the answer failed open) and one duration histogram per (zone, transport), each known by its
    index in a flat list, so that the packet cache's entries (tuples the collector does not
    track) can name the ones they add to; requests, responses and answers that failed open are
    sums of the counters, made at scrape time."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.histograms: list[Histogram] = []
        self._cells: dict[tuple[str, str, str, str, bool], int] = {}
        self._failing_open: set[int] = set()  # the cells of answers that failed open
        self._durations: dict[tuple[str, str], int] = {}
        self.dropped = 0

    def cell(self, zone: str, qtype: int, transport: str, rcode: int, fail_open: bool = False) -> int:
        key = (zone, TYPE_NAMES.get(qtype, "other"), transport, RCODE_NAMES.get(rcode, "other"), fail_open)
        found = self._cells.get(key)
        if found is None:
            found = self._cells[key] = len(self.counts)
            self.counts.append(0)
            if fail_open:
                self._failing_open.add(found)
        return found

    def fails_open(self, cell: int) -> bool:
        return cell in self._failing_open

    def histogram(self, zone: str, transport: str) -> int:
        found = self._durations.get((zone, transport))
        if found is None:
            found = self._durations[(zone, transport)] = len(self.histograms)
            self.histograms.append(Histogram())
        return found

    def observe(self, zone: str, qtype: int, transport: str, rcode: int, seconds: float, fail_open: bool = False) -> None:
        self.counts[self.cell(zone, qtype, transport, rcode, fail_open)] += 1
        self.histograms[self.histogram(zone, transport)].observe(seconds)

    @property
    def durations(self) -> dict[tuple[str, str], Histogram]:
        return {key: self.histograms[i] for key, i in self._durations.items()}

    def requests(self) -> dict[tuple[str, str, str], int]:
        out: dict[tuple[str, str, str], int] = {}
        for (zone, qtype, transport, _, _), i in self._cells.items():
            out[(zone, qtype, transport)] = out.get((zone, qtype, transport), 0) + self.counts[i]
        return out

    def responses(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for (zone, _, _, rcode, _), i in self._cells.items():
            out[(zone, rcode)] = out.get((zone, rcode), 0) + self.counts[i]
        return out

    def failed_open(self) -> dict[str, int]:
        """Answers given with critical machines, since every machine of their form was, by zone."""
        out: dict[str, int] = {}
        for (zone, _, _, _, fail_open), i in self._cells.items():
            if fail_open:
                out[zone] = out.get(zone, 0) + self.counts[i]
        return out
