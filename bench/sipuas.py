#!/usr/bin/env python3
"""A tiny SIP UAS for the benchmark's "policy" workload: answers every SIP request it
receives over UDP with 200 OK (RFC 3261 §8.2.6: Via, From, To with a tag, Call-ID and
CSeq copied), so sipdns' OPTIONS prober sees the target up. Bounded in time: exits after
--secs seconds (default one hour) so a crashed benchmark leaves nothing running.

    python3 bench/sipuas.py --addr 127.0.0.11 --port 25060 [--secs 3600]
"""

import argparse
import select
import socket
import time


def reply(request: bytes) -> bytes | None:
    try:
        text = request.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - anything undecodable is ignored
        return None
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    if not head or head[0].startswith("SIP/2.0"):
        return None  # a response, not a request
    copied = []
    for line in head[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            copied.append(line)
        elif name in ("to", "t"):
            copied.append(line if ";tag=" in line else line + ";tag=benchuas")
    out = ["SIP/2.0 200 OK", *copied, "Server: sipdns-bench-uas", "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.11")
    ap.add_argument("--port", type=int, default=25060)
    ap.add_argument("--secs", type=float, default=3600)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.addr, a.port))
    deadline = time.monotonic() + a.secs
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], 1.0)
        if not ready:
            continue
        data, peer = s.recvfrom(65535)
        resp = reply(data)
        if resp:
            s.sendto(resp, peer)


if __name__ == "__main__":
    main()
