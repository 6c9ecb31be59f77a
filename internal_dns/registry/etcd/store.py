"""The registry command's side of the etcd backend: the prefix read as the server reads it,
changes written in transactions."""

from __future__ import annotations

from collections.abc import Mapping
from operator import methodcaller
from typing import Any

from internal_dns.registry.catalog import RawEntity
from internal_dns.registry.etcd.client import Cluster, Compacted, read_prefix
from internal_dns.registry.etcd.codec import key_bytes, range_end, txn_ops
from internal_dns.registry.etcd.options import Settings

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: a write of more is several transactions


class EtcdStore:
    """The registry command's view of an etcd registry.

    A write is one transaction when it changes at most 128 keys (etcd's default --max-txn-ops);
    a bigger one (an import) is several transactions in turn, and servers may see it part-way.
    """

    def __init__(self, config: Settings):
        self.settings = config
        self.prefix = config.prefix
        self.cluster = Cluster(config.endpoints, config.timeout)

    def describe(self) -> str:
        return f"etcd {', '.join(self.settings.endpoints)} under {self.prefix}"

    def exists(self) -> bool:
        """Whether any key lies under the prefix (`check` fails on an empty one: a wrong prefix)."""
        from etcd3gw.utils import _encode

        start = key_bytes(self.prefix)
        payload = {"key": _encode(start), "range_end": _encode(range_end(start)), "limit": 1, "keys_only": True}
        return bool(self.cluster.post(f"reading {self.prefix}", "/kv/range", payload).get("kvs"))

    def read(self) -> list[RawEntity]:
        for _ in range(2):
            try:
                return read_prefix(self.cluster, self.prefix)[0]
            except Compacted:  # compacted between two pages: once more, at a newer revision
                continue
        return read_prefix(self.cluster, self.prefix)[0]

    def write(self, puts: list[tuple[str, Mapping[str, Any], RawEntity | None]], deletes: list[RawEntity]) -> None:
        ops = txn_ops(self.prefix, puts, deletes)
        for i in range(0, len(ops), MAX_TXN_OPS):
            txn = {"compare": [], "success": ops[i : i + MAX_TXN_OPS], "failure": []}
            self.cluster.call("writing", methodcaller("transaction", txn))  # client.transaction(txn)

    def close(self) -> None:
        self.cluster.close()
