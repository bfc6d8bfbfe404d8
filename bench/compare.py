#!/usr/bin/env python3
"""sipdns against unbound and dnsmasq, side by side in one run (issue 6).

Run through bench/compare.sh, which installs the tools and builds sipdns first:

    bench/compare.sh                       # the full run (about 12 minutes on 2 cores)
    bench/compare.sh --rounds 1 --secs 3   # a quick look

What it does:
 1. generates one data set (bench/gen.py) and starts, on 127.0.0.1 only: a loopback
    upstream (unbound, authoritative for fwd.example.net), a SIP UAS for the one live
    target (bench/sipuas.py), and the three servers under test;
 2. checks that the three give the same answers (the health policy's answer: the same
    minus the down target) and compares response sizes;
 3. per workload (static SIP records, SIP records through the health policy, forwarded and
    cached names, TCP), in rounds that interleave the servers in rotating order: max qps
    (dnsperf, fixed outstanding queries), server CPU-us per query (utime+stime of the
    server process over the run, children included), and p50/p99/p99.9 latency at a fixed
    5,000 qps (dnsperf -Q 5000 -v, one latency per query); medians over the rounds;
 4. peak RSS (VmHWM) of each server over the whole run;
 5. sipdns alone: RSS with the example config, RSS with 100,000 static records and 5,000
    probed targets, and a reload of that config under a query stream (duration, the
    slowest query during it, and lost queries);
 6. prints the table with sipdns/unbound and sipdns/dnsmasq ratios and the targets, and
    writes it to OUT/results.md and OUT/results.json.

Every load loop is bounded in time; every process started is stopped by its PID.
"""

import argparse
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnswire  # noqa: E402
import gen  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf("SC_CLK_TCK")
SERVERS = ("sipdns", "unbound", "dnsmasq")
WORKLOADS = ("static", "policy", "forwarded", "tcp")
QUERY_FILE = {"static": "static", "policy": "policy", "forwarded": "fwd", "tcp": "static"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------------------

class Procs:
    """Every process this run started, stopped by PID at the end."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = {}

    def start(self, name, argv, cwd=None, env=None):
        out = open(os.path.join(self.logdir, f"{name}.log"), "w")
        p = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        self.procs[name] = p
        return p

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def cpu_ticks(pid):
    """utime + stime of the process and its waited-for children (dnsmasq forks for TCP)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_answering(port, name, qtype, secs=30.0, tcp=False):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            r = dnswire.ask("127.0.0.1", port, name, qtype, timeout=0.5, tcp=tcp)
            if r.rcode == 0:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def port_free(port):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        # Like the servers: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


# --- dnsperf ------------------------------------------------------------------------------

def dnsperf(port, qfile, secs, extra=(), verbose=False):
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-e",
            "-l", str(secs), "-t", "2", *extra]
    if verbose:
        argv.append("-v")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        try:
            out, _ = p.communicate(timeout=secs + 30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        # The load generator's own CPU: it shares the 2 cores with the server under test.
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {"client_cpu_s": ru.ru_utime + ru.ru_stime}
    for key, pat in (("completed", r"Queries completed:\s+(\d+)"),
                     ("lost", r"Queries lost:\s+(\d+)"),
                     ("qps", r"Queries per second:\s+([\d.]+)")):
        m = re.search(pat, out)
        res[key] = float(m.group(1)) if m else 0.0
    if verbose:
        lat = [float(x) for x in re.findall(r"^> \S+ \S+ \S+ ([\d.]+)$", out, re.M)]
        res["latencies"] = lat
        res["rcodes"] = sorted(set(re.findall(r"^> (\S+) ", out, re.M)))
    return res


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def max_qps_run(server_pid, port, qfile, secs, tcp):
    opts = ["-c", "4", "-q", "200"] if tcp else ["-c", "4", "-q", "500"]
    # -b 2048: dnsperf's own socket buffers at 2 MB, so that bursts of answers are not
    # dropped at the client (which then holds an outstanding slot until its timeout).
    opts += ["-b", "2048"]
    if tcp:
        opts += ["-m", "tcp"]
    t0 = cpu_ticks(server_pid)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = dnsperf(port, qfile, secs, opts)
    t1 = cpu_ticks(server_pid)
    cpu_us = (t1 - t0) * 1e6 / HZ
    n = r["completed"] or float("nan")
    r["cpu_us"] = cpu_us
    r["client_us"] = (r.pop("client_cpu_s") - c0.ru_utime - c0.ru_stime) * 1e6
    r["cpu_us_per_q"] = cpu_us / n
    r["client_us_per_q"] = r["client_us"] / n
    return r


def sliced(order, slices, run):
    """Runs `run(server)` `slices` times per server, the servers taking turns (A/B/C/A/B/C...),
    so that each sees the same moments of a shared, noisy machine; returns the runs per
    server."""
    out = {s: [] for s in order}
    for _ in range(slices):
        for s in order:
            out[s].append(run(s))
    return out


def merge_max(rs):
    n = sum(r["completed"] for r in rs) or float("nan")
    return dict(qps=statistics.mean(r["qps"] for r in rs), completed=n,
                lost=sum(r["lost"] for r in rs),
                cpu_us_per_q=sum(r["cpu_us"] for r in rs) / n,
                client_us_per_q=sum(r["client_us"] for r in rs) / n)


def merge_lat(rs):
    lat = [x for r in rs for x in r["lat"]]
    return dict(p50=pct(lat, 50) * 1e6, p99=pct(lat, 99) * 1e6, p999=pct(lat, 99.9) * 1e6,
                max=max(lat) * 1e6 if lat else float("nan"), n=len(lat),
                lost=sum(r["lost"] for r in rs))


def latency_run(port, qfile, secs, tcp, rate):
    opts = ["-Q", str(rate), "-c", "1", "-q", "100"]
    if tcp:
        opts += ["-m", "tcp"]
    r = dnsperf(port, qfile, secs, opts, verbose=True)
    r["lat"] = r.pop("latencies")
    return r


# --- correctness --------------------------------------------------------------------------

def check_answers(ports, policy_applied):
    """Every server's answer set for every query; returns (problems, size rows)."""
    problems, sizes = [], []
    queries = [("static", n, t) for n, t in gen.STATIC_QUERIES]
    queries += [("policy", n, t) for n, t in gen.POLICY_QUERIES]
    queries += [("forwarded", gen.fwd_name(i), "A") for i in (0, 1, 999)]
    queries += [("static", f"nosuch.{gen.SIP_ZONE}", "A"), ("static", f"server1.{gen.SIP_ZONE}", "TXT")]
    for wl, name, qtype in queries:
        got = {}
        for s in SERVERS:
            got[s] = dnswire.ask("127.0.0.1", ports[s], name, qtype)
        ub, dm, sd = got["unbound"], got["dnsmasq"], got["sipdns"]
        want = ub.rrset()
        if dm.rrset() != want or dm.rcode != ub.rcode:
            problems.append(f"dnsmasq differs from unbound for {name} {qtype}: {dm.rrset()} vs {want}")
        sd_set = sd.rrset()
        if wl == "policy" and policy_applied:
            # The down target (sip2, 127.0.0.12) is withheld; the rest is unbound's answer.
            expect = tuple(r for r in want if "sip2." not in r[2] and r[2] != "127.0.0.12")
            if name.startswith("sip2."):
                expect = want  # all down for that host: served as is (all_down: serve_all)
        else:
            expect = want
        if sd_set != expect or sd.rcode != ub.rcode:
            problems.append(f"sipdns differs for {name} {qtype}: {sd_set} vs {expect} "
                            f"(rcode {sd.rcode} vs {ub.rcode})")
        # The extras must be right too: sipdns' ADDITIONAL records are real records.
        for rec in sd.rrset("additional"):
            if rec[1] in ("A", "AAAA", "SRV"):
                other = dnswire.ask("127.0.0.1", ports["unbound"], rec[0], rec[1]).rrset()
                if rec not in other:
                    problems.append(f"sipdns ADDITIONAL {rec} not in unbound's {rec[0]} {rec[1]}")
        if wl in ("static", "policy") and sd.rcode == 0 and sd.sections["answer"]:
            sizes.append(dict(query=f"{name} {qtype}", workload=wl,
                              sipdns=sd.size, sipdns_core=sd.core_size,
                              sipdns_answers=len(sd.sections["answer"]),
                              sipdns_additional=len(sd.sections["additional"]),
                              unbound=ub.size, unbound_core=ub.core_size,
                              unbound_answers=len(ub.sections["answer"]),
                              dnsmasq=dm.size, dnsmasq_core=dm.core_size))
    return problems, sizes


def wait_policy(port, secs):
    """Waits until sipdns withholds the down target; False if it never does (no prober)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            r = dnswire.ask("127.0.0.1", port, f"_sip._udp.{gen.POLICY_ZONE}", "SRV", timeout=0.5)
            names = {d for _, _, _, d in r.sections["answer"]}
            if names and not any("sip2." in d for d in names):
                return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


# --- sipdns alone: RSS and reload ---------------------------------------------------------

def sipdns_argv(binary, config):
    return [binary, "run", "-c", config]


def rss_run(procs, binary, workdir, name, port, settle, queries):
    cfg = os.path.join(workdir, name, "config.yaml")
    env = dict(os.environ, RUST_LOG="warn,sipdns::reload=info", SIPDNS_BENCH_TOKEN="bench")
    t0 = time.monotonic()
    p = procs.start(f"sipdns-{name}", sipdns_argv(binary, cfg), cwd=os.path.dirname(cfg), env=env)
    ok = wait_answering(port, queries[0][0], queries[0][1], secs=120)
    started = time.monotonic() - t0
    deadline = time.monotonic() + settle
    while ok and time.monotonic() < deadline:
        for n, t in queries:
            try:
                dnswire.ask("127.0.0.1", port, n, t, timeout=0.5)
            except OSError:
                pass
        time.sleep(0.2)
    res = dict(ok=ok, start_s=started, hwm_mb=status_kb(p.pid, "VmHWM") / 1024,
               rss_mb=status_kb(p.pid, "VmRSS") / 1024)
    return p, res


class Stream:
    """Queries at a fixed rate from one UDP socket, recording each query's send time and
    latency; what is still unanswered 1 s after the end counts as lost."""

    def __init__(self, port, names, rate, secs):
        self.port, self.names, self.rate, self.secs = port, names, rate, secs
        self.sent = {}
        self.done = []  # (send time, latency)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        start = time.monotonic()
        end = start + self.secs
        i = 0
        qid = 0
        while True:
            now = time.monotonic()
            if now >= end + 1.0:
                break
            if now < end and i < (now - start) * self.rate:
                name = self.names[i % len(self.names)]
                qid = (qid + 1) & 0xFFFF
                s.sendto(dnswire.query(name, "A", qid=qid), ("127.0.0.1", self.port))
                self.sent[qid] = time.monotonic()
                i += 1
            try:
                while True:
                    data = s.recv(4096)
                    t = time.monotonic()
                    rid = struct.unpack(">H", data[:2])[0]
                    st = self.sent.pop(rid, None)
                    if st is not None:
                        self.done.append((st, t - st))
            except BlockingIOError:
                pass
            time.sleep(0.0002)
        self.lost = len(self.sent)
        self.total = i


def reload_test(procs, binary, workdir, port, records):
    """SIGHUP reloads of the big config while a query stream runs: three after a change of
    config.yaml (the 100,000-record zone unchanged), three after a change of that zone.
    Returns the reload durations (from the signal to sipdns' log line of the swap) and the
    stream's worst latency inside the reload windows."""
    name = "sipdns-big"
    p = procs.procs[name]
    logpath = os.path.join(procs.logdir, f"{name}.log")
    cfg = os.path.join(workdir, "big", "config.yaml")
    zone = os.path.join(workdir, "big", "zones", "big.example.org.yaml")
    names = [f"h{i}.big.example.org" for i in range(0, records, max(1, records // 500))]
    stream = Stream(port, names, rate=2000, secs=14.0)
    stream.thread.start()
    time.sleep(1.5)
    windows = []
    durations = {"config": [], "zone": []}

    def change_config(k):
        with open(cfg) as f:
            text = f.read()
        text = re.sub(r"cache_size: \d+", f"cache_size: {20001 + k}", text)
        with open(cfg, "w") as f:
            f.write(text)

    def change_zone(k):
        with open(zone, "a") as f:
            f.write(f'  - {{ name: "reload{k}", type: A, address: 127.3.255.{k + 1} }}\n')

    for kind, change in (("config", change_config), ("zone", change_zone)):
        for k in range(3):
            change(k)
            with open(logpath) as f:
                before = f.read().count("config and zones reloaded")
            t0 = time.monotonic()
            p.send_signal(signal.SIGHUP)
            dt = None
            while time.monotonic() - t0 < 10:
                with open(logpath) as f:
                    if f.read().count("config and zones reloaded") > before:
                        dt = time.monotonic() - t0
                        break
                time.sleep(0.002)
            durations[kind].append(dt)
            windows.append((t0, t0 + (dt or 10)))
            time.sleep(1.5)
    stream.thread.join(30)
    inside = [lat for st, lat in stream.done if any(a <= st <= b for a, b in windows)]
    outside = [lat for st, lat in stream.done if not any(a - 0.1 <= st <= b + 0.1 for a, b in windows)]
    # The reloads must really be in force: the new names answer.
    ok = all(dnswire.ask("127.0.0.1", port, f"reload{k}.big.example.org", "A").rcode == 0
             for k in range(3))
    return dict(config_ms=[d * 1000 if d else None for d in durations["config"]],
                zone_ms=[d * 1000 if d else None for d in durations["zone"]],
                max_inside_ms=max(inside) * 1000 if inside else None, n_inside=len(inside),
                p99_outside_ms=pct(outside, 99) * 1000 if outside else None,
                max_outside_ms=max(outside) * 1000 if outside else None,
                lost=stream.lost, sent=stream.total, applied=ok)


# --- report -------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    xs = [x for x in xs if x == x and x > 0]
    if len(xs) < 2:
        return 0.0
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m * 100


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return dict(nproc=os.cpu_count(), cpu=model, kernel=platform.release(),
                unbound=subprocess.run(["unbound", "-V"], capture_output=True, text=True).stdout.split("\n")[0],
                dnsmasq=subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
                dnsperf=dnsperf_version())


def dnsperf_version():
    p = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    m = re.search(r"Version (\S+)", p.stdout + p.stderr)
    return m.group(1) if m else "?"


def fmt(x, nd=1):
    if x is None or x != x:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def report(res, args):
    L = []
    m = res["machine"]
    L.append(f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}; "
             f"{m['unbound']}, {m['dnsmasq']}, dnsperf {m['dnsperf']}.")
    L.append(f"Run: {args.rounds} rounds; per round, workload and server {args.slices} x {args.secs} s "
             f"at max qps and {args.slices} x {args.lat_secs} s at {args.rate} qps, the servers "
             f"taking turns slice by slice (A/B/C/A/B/C..., order rotated per round); medians over "
             f"rounds (latency percentiles pooled within a round). Load average before/after: "
             f"{res['load_before']} / {res['load_after']}.")
    if not res["policy_applied"]:
        L.append("WARNING: the health policy was not in force (no prober in this build): "
                 "the policy workload measured plain static answers.")
    L.append("")
    L.append("| workload | server | max qps | spread | CPU-µs/q | dnsperf CPU-µs/q | p50 µs | p99 µs | p99.9 µs | lost@5k |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = res["summary"]
    for wl in res["workloads"]:
        for s in SERVERS:
            x = summary[wl][s]
            L.append(f"| {wl} | {s} | {fmt(x['qps'])} | ±{x['qps_spread'] / 2:.0f}% | {fmt(x['cpu'], 2)} | "
                     f"{fmt(x['client'], 2)} | "
                     f"{fmt(x['p50'])} | {fmt(x['p99'])} | {fmt(x['p999'])} | {x['lost']:.0f} |")
    L.append("")
    L.append("| workload | qps sipdns/unbound | qps sipdns/dnsmasq | CPU/q sipdns/unbound | CPU/q sipdns/dnsmasq | p99 sipdns/unbound | p99 sipdns/dnsmasq |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for wl in res["workloads"]:
        r = res["ratios"][wl]
        L.append(f"| {wl} | {r['qps_u']:.2f} | {r['qps_d']:.2f} | {r['cpu_u']:.2f} | {r['cpu_d']:.2f} | "
                 f"{r['p99_u']:.2f} | {r['p99_d']:.2f} |")
    L.append("")
    L.append("Peak RSS (VmHWM) over the comparison run: " + ", ".join(
        f"{s} {res['rss'][s]:.1f} MB" for s in SERVERS))
    L.append("")
    L.append("Response sizes, bytes (EDNS, 1232); \"core\" = header + question + ANSWER + AUTHORITY, "
             "i.e. the same records; sipdns also adds RFC 3263 ADDITIONAL records:")
    L.append("")
    L.append("| query | sipdns total | sipdns core | unbound total | unbound core | dnsmasq total | dnsmasq core |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for z in res["sizes"]:
        L.append(f"| {z['query']} | {z['sipdns']} ({z['sipdns_additional']} add.) | {z['sipdns_core']} | "
                 f"{z['unbound']} | {z['unbound_core']} | {z['dnsmasq']} | {z['dnsmasq_core']} |")
    L.append("")
    if res.get("alone"):
        a = res["alone"]
        L.append("sipdns alone:")
        L.append("")
        if "example" in a:
            e = a["example"]
            L.append(f"- example config (deploy/sipdns.example.yaml on loopback): peak RSS {e['hwm_mb']:.1f} MB")
        if "big" in a:
            b = a["big"]
            L.append(f"- {args.big_records:,} static records + {args.big_targets:,} probed targets: "
                     f"start {b['start_s']:.2f} s, peak RSS {b['hwm_mb']:.1f} MB")
        if "reload" in a:
            r = a["reload"]
            c = ", ".join(fmt(x, 0) for x in r["config_ms"])
            z = ", ".join(fmt(x, 0) for x in r["zone_ms"])
            L.append(f"- reloads of that config (SIGHUP) under a 2,000 qps stream: after a config.yaml "
                     f"change {c} ms; after a change of the 100,000-record zone file itself {z} ms; "
                     f"slowest query during a reload {fmt(r['max_inside_ms'], 2)} ms "
                     f"({r['n_inside']} queries), p99 outside {fmt(r['p99_outside_ms'], 2)} ms; "
                     f"lost {r['lost']} of {r['sent']}; new records served: {r['applied']}")
        L.append("")
    L.append("Targets:")
    L.append("")
    for t in res["targets"]:
        L.append(f"- [{'x' if t['ok'] else ' '}] {t['what']}: {t['got']}")
    if res["problems"]:
        L.append("")
        L.append("Answer check problems:")
        L.extend(f"- {p}" for p in res["problems"])
    return "\n".join(L) + "\n"


def targets(res, args):
    T = []
    s, r = res["summary"], res["ratios"]

    def add(what, ok, got):
        T.append(dict(what=what, ok=bool(ok), got=got))

    for wl in ("static", "policy"):
        if wl in r:
            add(f"{wl}: max qps >= 1.2 x unbound", r[wl]["qps_u"] >= 1.2, f"{r[wl]['qps_u']:.2f} x")
            add(f"{wl}: CPU-µs/q <= unbound", r[wl]["cpu_u"] <= 1.0,
                f"{s[wl]['sipdns']['cpu']:.2f} vs {s[wl]['unbound']['cpu']:.2f} µs")
    if "forwarded" in r:
        add("forwarded: max qps >= 1.0 x unbound", r["forwarded"]["qps_u"] >= 1.0,
            f"{r['forwarded']['qps_u']:.2f} x")
    for wl in res["workloads"]:
        add(f"{wl}: p99 at {args.rate} qps <= unbound", r[wl]["p99_u"] <= 1.0,
            f"{s[wl]['sipdns']['p99']:.0f} vs {s[wl]['unbound']['p99']:.0f} µs")
    if res["sizes"]:
        worst = max(z["sipdns_core"] - z["unbound_core"] for z in res["sizes"])
        add("response size (same records) <= unbound", worst <= 0,
            f"largest difference {worst:+d} bytes")
    a = res.get("alone", {})
    if "example" in a:
        add("RSS with the example config <= 40 MB", a["example"]["hwm_mb"] <= 40,
            f"{a['example']['hwm_mb']:.1f} MB")
    if "big" in a:
        add(f"RSS with {args.big_records:,} records + {args.big_targets:,} targets <= 200 MB",
            a["big"]["hwm_mb"] <= 200, f"{a['big']['hwm_mb']:.1f} MB")
    if "reload" in a:
        rl = a["reload"]
        for kind, what in (("config_ms", "config.yaml changed"), ("zone_ms", "the big zone file changed")):
            worst = max((d for d in rl[kind] if d is not None), default=float("inf"))
            if None in rl[kind]:
                worst = float("inf")
            add(f"reload with {args.big_records:,} records < 200 ms ({what})", worst < 200,
                f"{fmt(worst, 0)} ms")
        add("reload blocks no query (none lost, none slower than 50 ms during it)",
            rl["lost"] == 0 and (rl["max_inside_ms"] or 0) < 50 and rl["applied"],
            f"lost {rl['lost']}, slowest {fmt(rl['max_inside_ms'], 2)} ms")
    return T


# --- main ---------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "target", "bench"))
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "sipdns"))
    ap.add_argument("--port-base", type=int, default=25300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=3,
                    help="per round, each server's runs are cut in this many slices, "
                         "the servers taking turns")
    ap.add_argument("--secs", type=int, default=3, help="seconds per max-qps slice")
    ap.add_argument("--lat-secs", type=int, default=2, help="seconds per fixed-rate slice")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--servers", default=",".join(SERVERS), help="(all three are started)")
    ap.add_argument("--big-records", type=int, default=100_000)
    ap.add_argument("--big-targets", type=int, default=5_000)
    ap.add_argument("--skip-alone", action="store_true", help="skip the RSS and reload part")
    ap.add_argument("--skip-compare", action="store_true", help="only the RSS and reload part")
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]

    work = os.path.abspath(args.out)
    os.makedirs(work, exist_ok=True)
    sys.argv = ["gen.py", work, "--port-base", str(args.port_base),
                "--big-records", str(args.big_records), "--big-targets", str(args.big_targets)]
    gen.main()
    with open(os.path.join(work, "ports.json")) as f:
        ports = json.load(f)
    for k, v in ports.items():
        if k != "sip_port" and not port_free(v):
            sys.exit(f"port 127.0.0.1:{v} ({k}) is in use; pick another --port-base")
    logdir = os.path.join(work, "logs")
    os.makedirs(logdir, exist_ok=True)
    procs = Procs(logdir)
    res = dict(machine=machine(), workloads=workloads, problems=[], sizes=[])

    def on_signal(signum, _frame):
        procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        env = dict(os.environ, RUST_LOG="warn", SIPDNS_BENCH_TOKEN="bench")
        procs.start("upstream", ["unbound", "-d", "-c", f"{work}/upstream/unbound.conf"])
        if not wait_answering(ports["upstream"], gen.fwd_name(1), "A"):
            sys.exit("the loopback upstream did not start; see " + logdir)
        res["load_before"] = open("/proc/loadavg").read().split()[0]
        if not args.skip_compare:
            run_compare(args, work, ports, procs, env, res, workloads)
        if not args.skip_alone:
            res["alone"] = run_alone(args, work, ports, procs)
        res["load_after"] = open("/proc/loadavg").read().split()[0]
    finally:
        procs.stop_all()
    if args.skip_compare:
        res.setdefault("summary", {})
        res.setdefault("ratios", {})
        res["workloads"] = []
        res.setdefault("rss", {s: float("nan") for s in SERVERS})
        res.setdefault("policy_applied", True)
    res["targets"] = targets(res, args)
    text = report(res, args)
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(text)
    log(f"(results in {work}/results.md and results.json; logs in {logdir})")


def run_compare(args, work, ports, procs, env, res, workloads):
    procs.start("sipuas", [sys.executable, os.path.join(REPO, "bench", "sipuas.py"),
                           "--addr", gen.UP_TARGET[0], "--port", str(gen.UP_TARGET[1]),
                           "--secs", "7200"])
    procs.start("sipdns", sipdns_argv(args.binary, f"{work}/sipdns/config.yaml"),
                cwd=f"{work}/sipdns", env=env)
    procs.start("unbound", ["unbound", "-d", "-c", f"{work}/unbound/unbound.conf"])
    with open(f"{work}/dnsmasq/args") as f:
        procs.start("dnsmasq", ["dnsmasq", *f.read().split("\n")[:-1]])
    pids = {s: procs.procs[s].pid for s in SERVERS}
    for s in SERVERS:
        if not wait_answering(ports[s], gen.SIP_ZONE, "NAPTR"):
            sys.exit(f"{s} did not start; see {procs.logdir}/{s}.log")
    log("servers up; waiting for the prober to mark the down target ...")
    res["policy_applied"] = wait_policy(ports["sipdns"], 30)
    if not res["policy_applied"]:
        log("WARNING: sipdns never withheld the down target: is the prober wired in?")

    # Warm every cache (forwarded names, encoded answers), then check the answers.
    for s in SERVERS:
        for qf in ("static", "policy", "fwd"):
            dnsperf(ports[s], f"{work}/queries/{qf}.txt", 10, ["-n", "1", "-c", "1", "-q", "20"])
    res["problems"], res["sizes"] = check_answers(ports, res["policy_applied"])
    for p in res["problems"]:
        log("CHECK:", p)

    runs = {wl: {s: [] for s in SERVERS} for wl in workloads}
    lats = {wl: {s: [] for s in SERVERS} for wl in workloads}
    for rnd in range(args.rounds):
        order = SERVERS[rnd % 3:] + SERVERS[:rnd % 3]
        for wl in workloads:
            qfile = f"{work}/queries/{QUERY_FILE[wl]}.txt"
            tcp = wl == "tcp"
            maxes = sliced(order, args.slices, lambda s: max_qps_run(
                pids[s], ports[s], qfile, args.secs, tcp))
            for s in order:
                r = merge_max(maxes[s])
                runs[wl][s].append(r)
                log(f"round {rnd + 1} {wl:9} {s:8} max {r['qps']:9.0f} qps  "
                    f"{r['cpu_us_per_q']:5.2f} CPU-µs/q (dnsperf {r['client_us_per_q']:5.2f})  "
                    f"lost {r['lost']:.0f}")
            slow = sliced(order, args.slices, lambda s: latency_run(
                ports[s], qfile, args.lat_secs, tcp, args.rate))
            for s in order:
                r = merge_lat(slow[s])
                lats[wl][s].append(r)
                log(f"round {rnd + 1} {wl:9} {s:8} @{args.rate}: p50 {r['p50']:6.0f} p99 {r['p99']:6.0f} "
                    f"p99.9 {r['p999']:6.0f} µs  lost {r['lost']:.0f}")
    res["rss"] = {s: status_kb(pids[s], "VmHWM") / 1024 for s in SERVERS}
    summary, ratios = {}, {}
    for wl in workloads:
        summary[wl] = {}
        for s in SERVERS:
            summary[wl][s] = dict(
                qps=med([r["qps"] for r in runs[wl][s]]),
                qps_spread=spread([r["qps"] for r in runs[wl][s]]),
                qps_all=[round(r["qps"]) for r in runs[wl][s]],
                cpu=med([r["cpu_us_per_q"] for r in runs[wl][s]]),
                cpu_all=[round(r["cpu_us_per_q"], 2) for r in runs[wl][s]],
                client=med([r["client_us_per_q"] for r in runs[wl][s]]),
                p50=med([r["p50"] for r in lats[wl][s]]),
                p99=med([r["p99"] for r in lats[wl][s]]),
                p999=med([r["p999"] for r in lats[wl][s]]),
                p99_all=[round(r["p99"]) for r in lats[wl][s]],
                lost=sum(r["lost"] for r in lats[wl][s]))
        x = summary[wl]

        def ratio(a, b):
            return a / b if b else float("nan")

        ratios[wl] = dict(
            qps_u=ratio(x["sipdns"]["qps"], x["unbound"]["qps"]),
            qps_d=ratio(x["sipdns"]["qps"], x["dnsmasq"]["qps"]),
            cpu_u=ratio(x["sipdns"]["cpu"], x["unbound"]["cpu"]),
            cpu_d=ratio(x["sipdns"]["cpu"], x["dnsmasq"]["cpu"]),
            p99_u=ratio(x["sipdns"]["p99"], x["unbound"]["p99"]),
            p99_d=ratio(x["sipdns"]["p99"], x["dnsmasq"]["p99"]))
    res["summary"], res["ratios"] = summary, ratios
    for s in ("sipdns", "unbound", "dnsmasq", "sipuas"):
        procs.stop(s)


def run_alone(args, work, ports, procs):
    out = {}
    queries = [(gen.SIP_ZONE, "NAPTR"), (f"_sip._udp.{gen.SIP_ZONE}", "SRV"),
               (f"server1.{gen.SIP_ZONE}", "A"), (gen.fwd_name(3), "A")]
    log("sipdns alone: the example config ...")
    _, out["example"] = rss_run(procs, args.binary, work, "example", ports["example"], 5, queries)
    procs.stop("sipdns-example")
    log(f"sipdns alone: {args.big_records:,} records and {args.big_targets:,} targets ...")
    bq = [("h1.big.example.org", "A"), (f"_sip._udp.{gen.POLICY_ZONE}", "SRV"), (gen.fwd_name(3), "A")]
    # 20 s: every unreachable target has been probed and marked down (interval 5 s, fall 2)
    # before the reloads are timed, so they see the steady state, not the start-up churn.
    _, out["big"] = rss_run(procs, args.binary, work, "big", ports["big"], 20, bq)
    log("sipdns alone: reloads under a query stream ...")
    out["reload"] = reload_test(procs, args.binary, work, ports["big"], args.big_records)
    out["big"]["hwm_after_reload_mb"] = status_kb(procs.procs["sipdns-big"].pid, "VmHWM") / 1024
    procs.stop("sipdns-big")
    return out


if __name__ == "__main__":
    main()
