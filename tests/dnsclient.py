"""A DNS client for the tests: real sockets, dnspython to build and decode, dnslib to decode again.

Every reply is parsed by both libraries and `Reply` checks that they agree on the header and on
every record, so a wire-format mistake shows up even where dnspython would be lenient.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dnslib


def exchange(
    wire: bytes, port: int, *, host: str = "127.0.0.1", source: str | None = None, tcp: bool = False, timeout: float = 3.0
) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
        if tcp:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", recv_exact(sock, 2))
            return recv_exact(sock, length)
        sock.send(wire)
        return sock.recv(65535)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


@dataclass
class Reply:
    wire: bytes
    msg: dns.message.Message
    lib: dnslib.DNSRecord

    @classmethod
    def decode(cls, wire: bytes) -> Reply:
        reply = cls(wire, dns.message.from_wire(wire), dnslib.DNSRecord.parse(wire))
        reply.check_agreement()
        return reply

    # --- convenient views -------------------------------------------------------------------
    @property
    def rcode(self) -> int:
        return self.msg.rcode()

    @property
    def rcode_text(self) -> str:
        return dns.rcode.to_text(self.msg.rcode())

    def flag(self, name: str) -> bool:
        return bool(self.msg.flags & dns.flags.from_text(name))

    def addresses(self, rdtype: str = "AAAA") -> list[str]:
        """Answer addresses of one type, in wire order."""
        t = dns.rdatatype.from_text(rdtype)
        return [rd.address for rrset in self.msg.answer if rrset.rdtype == t for rd in rrset]

    def txt(self) -> list[str]:
        """Each TXT record's character-strings concatenated back into its value."""
        return [b"".join(rd.strings).decode() for rrset in self.msg.answer if rrset.rdtype == dns.rdatatype.TXT for rd in rrset]

    def txt_strings(self) -> list[list[bytes]]:
        return [list(rd.strings) for rrset in self.msg.answer if rrset.rdtype == dns.rdatatype.TXT for rd in rrset]

    def srv(self) -> list[tuple[int, int, int, str]]:
        """Answer SRV records as (priority, weight, port, target), in wire order."""
        return [
            (rd.priority, rd.weight, rd.port, rd.target.to_text())
            for rrset in self.msg.answer
            if rrset.rdtype == dns.rdatatype.SRV
            for rd in rrset
        ]

    def ptr(self) -> list[str]:
        return [rd.target.to_text() for rrset in self.msg.answer if rrset.rdtype == dns.rdatatype.PTR for rd in rrset]

    def additional(self) -> list[tuple[str, str, str]]:
        """The additional section but the OPT: (owner, type, address), in wire order."""
        return [
            (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.address)
            for rrset in self.msg.additional
            for rd in rrset
        ]

    def nsid(self) -> bytes | None:
        """The NSID option's data (RFC 5001), if the reply carries one."""
        for option in self.msg.options:
            if option.otype == dns.edns.NSID:
                return option.to_wire()
        return None

    def soa(self) -> dns.rdtypes.ANY.SOA.SOA | None:  # type: ignore[name-defined]
        for rrset in self.msg.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return rrset[0]
        return None

    # --- the second decoder -----------------------------------------------------------------
    def check_agreement(self) -> None:
        m, d = self.msg, self.lib
        h = d.header
        assert h.id == m.id
        assert (h.qr, h.aa, h.tc, h.rd, h.ra) == tuple(
            int(bool(m.flags & f)) for f in (dns.flags.QR, dns.flags.AA, dns.flags.TC, dns.flags.RD, dns.flags.RA)
        )
        assert h.rcode == (m.rcode() & 0xF)
        assert len(d.questions) == len(m.question)
        for q, mq in zip(d.questions, m.question, strict=True):
            assert str(q.qname) == mq.name.to_text()
            assert q.qtype == mq.rdtype
        dns_answer = [(rrset, rd) for rrset in m.answer for rd in rrset]
        dns_auth = [(rrset, rd) for rrset in m.authority for rd in rrset]
        dns_extra = [(rrset, rd) for rrset in m.additional for rd in rrset]
        lib_extra = [r for r in d.ar if r.rtype != dnslib.QTYPE.OPT]
        assert len(d.rr) == len(dns_answer)
        assert len(d.auth) == len(dns_auth)
        assert len(lib_extra) == len(dns_extra)
        for lib_rr, (rrset, rd) in zip(d.rr + d.auth + lib_extra, dns_answer + dns_auth + dns_extra, strict=True):
            assert str(lib_rr.rname) == rrset.name.to_text()
            assert lib_rr.rtype == rrset.rdtype
            assert lib_rr.ttl == rrset.ttl
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                assert ipaddress.ip_address(str(lib_rr.rdata)) == ipaddress.ip_address(rd.address)
            elif rrset.rdtype == dns.rdatatype.TXT:
                assert [bytes(s) for s in lib_rr.rdata.data] == list(rd.strings)
            elif rrset.rdtype == dns.rdatatype.SRV:
                srv = lib_rr.rdata
                assert (srv.priority, srv.weight, srv.port) == (rd.priority, rd.weight, rd.port)
                assert str(srv.target) == rd.target.to_text()
            elif rrset.rdtype == dns.rdatatype.PTR:
                assert str(lib_rr.rdata.label) == rd.target.to_text()
            elif rrset.rdtype == dns.rdatatype.SOA:
                assert lib_rr.rdata.times[0] == rd.serial
                assert str(lib_rr.rdata.mname) == rd.mname.to_text()
        opts = [r for r in d.ar if r.rtype == dnslib.QTYPE.OPT]
        assert len(opts) == (1 if m.edns >= 0 else 0)
        if opts:
            assert opts[0].rclass == m.payload


def make_query(
    name: str,
    rdtype: str | int = "AAAA",
    *,
    rdclass: str = "IN",
    edns: int | bool = 0,
    payload: int = 1232,
    want_dnssec: bool = False,
    nsid: bool = False,
) -> dns.message.Message:
    """A query; `nsid` asks which server answers (an empty NSID option, RFC 5001)."""
    use_edns = edns if not isinstance(edns, bool) else (0 if edns else -1)
    options = [dns.edns.GenericOption(dns.edns.NSID, b"")] if nsid else None
    return dns.message.make_query(
        name, rdtype, rdclass, use_edns=use_edns, payload=payload, want_dnssec=want_dnssec, options=options
    )
