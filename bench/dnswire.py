"""A small DNS wire-format helper for the benchmark: build queries, parse responses far
enough to compare record sets and measure section sizes. Standard library only (the
benchmark must run from a clean Debian 12 with python3 and nothing else)."""

import ipaddress
import random
import socket
import struct

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
         "AAAA": 28, "SRV": 33, "NAPTR": 35, "OPT": 41}
TYPE_NAMES = {v: k for k, v in TYPES.items()}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(name, qtype, qid=None, edns=1232, rd=True):
    """A query packet; `edns=None` sends no OPT record."""
    qid = random.randrange(65536) if qid is None else qid
    flags = 0x0100 if rd else 0
    arcount = 1 if edns else 0
    pkt = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, arcount)
    pkt += encode_name(name) + struct.pack(">HH", TYPES[qtype], 1)
    if edns:
        pkt += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
    return pkt


def read_name(msg, i):
    """(lower-cased presentation name, offset after the name in place)."""
    labels = []
    end = None
    hops = 0
    while True:
        n = msg[i]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = i + 2
            i = ((n & 0x3F) << 8) | msg[i + 1]
            hops += 1
            if hops > 64:
                raise ValueError("pointer loop")
            continue
        if n == 0:
            i += 1
            break
        labels.append(msg[i + 1:i + 1 + n].decode("latin-1").lower())
        i += 1 + n
    return ".".join(labels) + ".", (end if end is not None else i)


def rdata_text(msg, rtype, start, rdlen):
    """A canonical text form of the RDATA (names lower-cased, compression undone)."""
    rd = msg[start:start + rdlen]
    if rtype == 1:
        return str(ipaddress.IPv4Address(rd))
    if rtype == 28:
        return str(ipaddress.IPv6Address(rd))
    if rtype in (2, 5, 12):
        return read_name(msg, start)[0]
    if rtype == 33:
        prio, weight, port = struct.unpack(">HHH", rd[:6])
        return f"{prio} {weight} {port} {read_name(msg, start + 6)[0]}"
    if rtype == 35:
        order, pref = struct.unpack(">HH", rd[:4])
        i = start + 4
        parts = []
        for _ in range(3):
            n = msg[i]
            parts.append(msg[i + 1:i + 1 + n].decode("latin-1"))
            i += 1 + n
        flags, service, regexp = parts
        return f'{order} {pref} "{flags.lower()}" "{service.upper()}" "{regexp}" {read_name(msg, i)[0]}'
    if rtype == 6:
        mname, i = read_name(msg, start)
        rname, i = read_name(msg, i)
        return f"{mname} {rname} " + " ".join(str(x) for x in struct.unpack(">IIIII", msg[i:i + 20]))
    return rd.hex()


class Response:
    """A parsed response: header fields, records per section, and section sizes."""

    def __init__(self, msg):
        self.raw = msg
        self.size = len(msg)
        (self.id, flags, qd, an, ns, ar) = struct.unpack(">HHHHHH", msg[:12])
        self.rcode = flags & 0xF
        self.tc = bool(flags & 0x0200)
        self.aa = bool(flags & 0x0400)
        i = 12
        for _ in range(qd):
            _, i = read_name(msg, i)
            i += 4
        self.sections = {}
        # Bytes up to the end of ANSWER + AUTHORITY: "the same records" when one server
        # adds ADDITIONAL records the other does not.
        self.core_size = None
        for sec, count in (("answer", an), ("authority", ns), ("additional", ar)):
            recs = []
            for _ in range(count):
                name, i = read_name(msg, i)
                rtype, _cls, ttl, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
                i += 10
                if rtype != 41:
                    recs.append((name, rtype, ttl, rdata_text(msg, rtype, i, rdlen)))
                i += rdlen
            self.sections[sec] = recs
            if sec == "authority":
                self.core_size = i

    def rrset(self, section="answer"):
        """Records of a section without TTLs, as a sorted tuple (order-insensitive)."""
        return tuple(sorted((n, TYPE_NAMES.get(t, str(t)), d) for n, t, _, d in self.sections[section]))


def ask(server, port, name, qtype, tcp=False, timeout=2.0, edns=1232):
    """One query, one parsed response."""
    pkt = query(name, qtype, edns=edns)
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack(">H", len(pkt)) + pkt)
            want = struct.unpack(">H", _recv_exact(s, 2))[0]
            return Response(_recv_exact(s, want))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, (server, port))
        while True:
            data, _ = s.recvfrom(65535)
            if data[:2] == pkt[:2]:
                return Response(data)


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf
