"""Following changes: one watch on the prefix from a revision, its stream read by a thread of its own."""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Mapping
from typing import Any

from internal_dns.registry.etcd.client import reason
from internal_dns.registry.etcd.codec import key_bytes, range_end
from internal_dns.registry.live import Resync, Unavailable

_EVENTS, _RESYNC, _DOWN = "events", "resync", "down"


class Watch:
    """One watch on the prefix from a revision, read by a thread of its own into a queue.

    etcd3gw's Watcher would do the reading, but it drops the gateway's cancellation (the start
    revision is compacted: we must load everything again) and never tells that the stream ended
    or broke (etcd is gone: we must say so and reconnect), so the stream is read here, over the
    etcd3gw client's own session and URL, with etcd3gw's encoding.
    """

    def __init__(self, client: Any, prefix: str, start_revision: int, timeout: float):
        from etcd3gw.utils import _encode

        self.client = client
        self.start_revision = start_revision
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._ended: Exception | None = None
        start = key_bytes(prefix)
        # Not `fragment`: a revision's events then come whole, so a watch resumed after the last
        # revision handed out misses none.
        body = {
            "create_request": {"key": _encode(start), "range_end": _encode(range_end(start)), "start_revision": start_revision}
        }
        response = client.session.post(client.get_url("/watch"), json=body, stream=True, timeout=(timeout, timeout))
        if response.status_code != 200:
            text = response.text
            response.close()
            from etcd3gw import exceptions

            raise exceptions.ConnectionFailedError(text)
        self.response = response
        # The timeout bounded the answer's headers; a quiet watch is no error (changes() checks
        # that etcd answers), so reads wait as long as it takes, until close() shuts the socket.
        self._sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
        if self._sock is not None:
            self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, name=f"etcd watch {client.base_url}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        why = "etcd ended the watch stream"
        try:
            buffer = bytearray()
            for chunk in self.response.iter_content(chunk_size=None):
                scanned = len(buffer)
                buffer += chunk
                while (end := buffer.find(b"\n", scanned)) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    scanned = 0
                    if line.strip() and not self._message(json.loads(line)):
                        return
        except Exception as exc:  # the connection broke (etcd stopped, or close()): said below
            why = f"the watch stream broke ({reason(exc)})"
        finally:
            self.response.close()
        self.queue.put((_DOWN, f"{self.client.base_url}: {why}"))

    def _message(self, message: Mapping[str, Any]) -> bool:
        """Queue what one message of the stream says; False when it ends the watch."""
        from etcd3gw.utils import _decode

        if "error" in message:
            error = message["error"]
            text = error.get("message", error) if isinstance(error, Mapping) else error
            self.queue.put((_DOWN, f"{self.client.base_url}: the watch failed: {text}"))
            return False
        result = message.get("result") or {}
        if result.get("canceled"):
            compacted = int(result.get("compact_revision") or 0)
            if compacted:
                self.queue.put((_RESYNC, f"revision {self.start_revision} is compacted (etcd keeps revisions from {compacted})"))
            else:
                why = result.get("cancel_reason") or "no reason given"
                self.queue.put((_DOWN, f"{self.client.base_url}: etcd canceled the watch ({why})"))
            return False
        events = result.get("events")
        if events:  # else `created`, or a progress notification: nothing to apply
            batch = []
            for event in events:
                kv = event["kv"]
                batch.append(
                    (event.get("type", "PUT"), _decode(kv["key"]), _decode(kv.get("value", "")), int(kv["mod_revision"]))
                )
            self.queue.put((_EVENTS, batch))
        return True

    def next_batch(self, timeout: float) -> list[tuple[str, bytes, bytes, int]]:
        """The events that arrive within `timeout`, with all those already queued; nothing when
        none came. Raises Resync or Unavailable when the watch has ended (after handing out the
        events that came before the end)."""
        if self._ended is not None:
            raise self._ended
        try:
            kind, payload = self.queue.get(timeout=timeout)
        except queue.Empty:
            return []
        events: list[tuple[str, bytes, bytes, int]] = []
        while True:
            if kind == _EVENTS:
                events.extend(payload)
            else:
                self._ended = Resync(payload) if kind == _RESYNC else Unavailable(payload)
                if events:
                    return events
                raise self._ended
            try:
                kind, payload = self.queue.get_nowait()
            except queue.Empty:
                return events

    def close(self) -> None:
        """End the watch; a next_batch waiting on another thread returns at once."""
        self.queue.put((_DOWN, "the watch was closed"))
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
            except OSError:
                pass
        else:
            self.response.close()
