#!/usr/bin/env python3
"""Turns the client reports of one scripts/bench.sh run into the markdown table
and JSON file, and decides the exit code: non-zero when a case failed (a target
that did not start, stream errors, no events), never because of a number.
Capacity cases may fail by design (that is what they search for); they count
as failures only in --smoke, where 50 streams must always be held."""

import argparse
import json
import statistics
import sys

TARGETS = ["direct", "sidecar", "nginx", "haproxy", "floor", "baseline", "resume", "redis"]
# Columns that are yardsticks, not peers: shown (with a sidecar/X ratio) only when they ran.
YARDSTICKS = ["floor", "baseline"]
# The sidecar with resume on (memory store, Redis store): their cost against the sidecar.
COSTS = ["resume", "redis"]


def load_cases(path):
    cases = []
    with open(path) as f:
        for line in f:
            wl, target, status, js, load, rnd = line.rstrip("\n").split("\t")
            r = json.load(open(js)) if status == "ok" else None
            cases.append({"workload": wl, "target": target, "status": status, "load1": load,
                          "round": int(rnd), "report": r})
    return cases


def problems(c, smoke):
    """Why a case failed, or [] when it did not."""
    r, wl = c["report"], c["workload"]
    if r is None:
        return [c["status"]]
    if wl.endswith("capacity") and not smoke:
        return []
    out = []
    if r["failures_total"]:
        out.append(f"{r['failures_total']} stream failures {r['failure_samples'][:3]}")
    if r["held"] != r["streams"]:
        out.append(f"held {r['held']} of {r['streams']} streams")
    if wl in ("latency", "fanout", "throughput", "tls-h2-latency") and r["events_window"] == 0:
        out.append("no events")
    if wl.endswith("latency") and r["bad_timestamps"]:
        out.append(f"{r['bad_timestamps']} implausible timestamps")
    return out


def pick(cases, wl, target):
    """The case for (wl, target); for capacity the largest clean try, else the last one."""
    cs = [c for c in cases if c["workload"] == wl and c["target"] == target]
    if wl.endswith("capacity"):
        clean = [c for c in cs if c["report"] and not c["report"]["failures_total"]
                 and c["report"]["held"] == c["report"]["streams"]]
        if clean:
            return max(clean, key=lambda c: c["report"]["streams"])
    return cs[-1] if cs else None


def fmt(v, digits=1):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if abs(v) >= 100 or digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def signed(v):
    return ("+" if v >= 0 else "−") + fmt(abs(v))


def ratio(a, b):
    if a is None or b is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= 0:
        return None
    return a / b


def round_rows(cases):
    """The rows of one round. Each row: key, workload, metric, digits, `abs` (the figure per
    target), `cmp` (the figure ratios and goals use: added latency for latency rows, else
    `abs`) and `text` (a figure that is not a number, e.g. a failed capacity search)."""
    rows = []

    def rep(wl, t):
        c = pick(cases, wl, t)
        return c["report"] if c and c["report"] else None

    def row(wl, key, metric, digits):
        r = {"workload": wl, "key": key, "metric": metric, "digits": digits, "abs": {}, "cmp": {}, "text": {}}
        rows.append(r)
        return r

    def proxy_metric(wl, key, metric, fn, digits):
        r = row(wl, key, metric, digits)
        for t in TARGETS:
            x = rep(wl, t)
            v = fn(x) if x else None
            if v is not None:
                r["abs"][t] = r["cmp"][t] = v

    def cpu_per_event(x):
        p = x.get("proxy")
        if not p or not x["events_window"]:
            return None
        return p["cpu_s_window"] * 1e6 / x["events_window"]

    def mem(x):
        p = x.get("proxy")
        if not p or not x["streams"]:
            return None
        return (p["rss_loaded_kib"] - p["rss_idle_kib"]) / x["streams"]

    def latency_rows(wl, prefix, how):
        # "added" is against the direct case of the same workload: plain HTTP/1.1 to the origin.
        direct = rep(wl, "direct")
        for q, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            r = row(wl, f"{prefix}latency_added_{q}_us", f"{name} latency µs{how} (added = proxy − direct)", 1)
            for t in TARGETS:
                x = rep(wl, t)
                if not x or not x["latency_us"]["count"]:
                    continue
                r["abs"][t] = x["latency_us"][q]
                if t != "direct" and direct and direct["latency_us"]["count"]:
                    r["cmp"][t] = x["latency_us"][q] - direct["latency_us"][q]
        proxy_metric(wl, f"{prefix}latency_cpu_us_per_event", f"CPU µs per event{how} (user+sys, process group)",
                     cpu_per_event, 2)

    def capacity_row(wl, key, metric):
        r = row(wl, key, metric, 0)
        for t in TARGETS:
            cs = [c for c in cases if c["workload"] == wl and c["target"] == t]
            if not cs:
                continue
            best = pick(cases, wl, t)
            x = best["report"] if best else None
            if x and not x["failures_total"] and x["held"] == x["streams"]:
                r["abs"][t] = r["cmp"][t] = x["streams"]
            else:
                tried = min((c["report"]["streams"] for c in cs if c["report"]), default=None)
                r["text"][t] = f"< {fmt(tried, 0)}" if tried else cs[-1]["status"]

    latency_rows("latency", "", "")
    proxy_metric("fanout", "fanout_cpu_s_per_1000_events", "CPU s per 1,000 events (user+sys, process group)",
                 lambda x: None if cpu_per_event(x) is None else cpu_per_event(x) / 1000, 4)
    proxy_metric("fanout", "fanout_events", "events delivered in window", lambda x: x["events_window"], 0)
    proxy_metric("memory", "memory_kib_per_stream", "KiB per idle stream ((RSS loaded − idle) / streams)",
                 mem, 1)
    capacity_row("capacity", "capacity_streams", "streams held with no error")
    proxy_metric("throughput", "throughput_mib_s", "MiB/s, one stream of 64 KiB events", lambda x: x["mib_per_s"], 1)
    latency_rows("tls-h2-latency", "tls_h2_", ", TLS+h2")
    proxy_metric("tls-h2-memory", "tls_h2_memory_kib_per_stream", "KiB per idle stream, TLS+h2", mem, 1)
    proxy_metric("tls-h1-memory", "tls_h1_memory_kib_per_stream", "KiB per idle stream, TLS HTTP/1.1", mem, 1)
    capacity_row("tls-h2-capacity", "tls_h2_capacity_streams", "streams held with no error, TLS+h2")
    return rows


def build_rows(cases):
    """Rows over all rounds: each figure is the median of its rounds (added latency is taken
    per round, against that round's direct run, before the median)."""
    merged = {}
    for rnd in sorted({c["round"] for c in cases}):
        for r in round_rows([c for c in cases if c["round"] == rnd]):
            m = merged.setdefault(r["key"], {**r, "abs": {}, "cmp": {}, "text": {}})
            for field in ("abs", "cmp"):
                for t, v in r[field].items():
                    m[field].setdefault(t, []).append(v)
            m.setdefault("per_round", {})
            for t, v in r["cmp"].items():
                m["per_round"].setdefault(t, []).append(v)
            for t, v in r["text"].items():
                m["text"].setdefault(t, v)
    rows = []
    for m in merged.values():
        for field in ("abs", "cmp"):
            m[field] = {t: statistics.median(vs) for t, vs in m[field].items()}
        values = dict(m["text"])
        for t, v in m["abs"].items():
            if "latency_added" in m["key"] and t in m["cmp"]:
                values[t] = f"{fmt(v)} ({signed(m['cmp'][t])})"
            else:
                values[t] = fmt(v, m["digits"])
        m["values"] = values
        m["compare"] = m.pop("cmp")
        rows.append(m)
    return rows


def goal(row):
    """The issue's target for the sidecar on this row, as (text, met or None)."""
    c = row["compare"]
    s, n, h = c.get("sidecar"), c.get("nginx"), c.get("haproxy")
    if s is None:
        return ("", None)
    key = row["key"]
    lowest = ("latency_added_p99_us", "latency_cpu_us_per_event", "fanout_cpu_s_per_1000_events",
              "tls_h2_latency_added_p99_us", "tls_h2_latency_cpu_us_per_event")
    if key in lowest and n is not None and h is not None:
        return ("≤ min(nginx, haproxy)", s <= min(n, h))
    # Below HAProxy, or else at most this many KiB per stream (issue 18 §2; None: no fallback).
    fallback = {"memory_kib_per_stream": 8, "tls_h1_memory_kib_per_stream": 24,
                "tls_h2_memory_kib_per_stream": None}
    if key in fallback and h is not None:
        f = fallback[key]
        if s < h:
            return ("< haproxy" + (f" (else ≤ {f} KiB)" if f else ""), True)
        if f is None:
            return ("< haproxy", False)
        return (f"< haproxy ✗; fallback ≤ {f} KiB", s <= f)
    if key in ("capacity_streams", "tls_h2_capacity_streams"):
        return ("9,000", s >= 9000)
    if key == "throughput_mib_s" and n is not None:
        return ("≥ 90 % of nginx", s >= 0.9 * n)
    return ("", None)


def markdown(meta, rows, cases, failures):
    m = meta
    out = [f"# sse-sidecar benchmark — {m['date']}{' (smoke)' if m['smoke'] else ''}", ""]
    out.append(f"Machine: {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}; load average at the end: "
               f"{m['loadavg_end']}. Peers: {m['nginx']}; {m['haproxy']}. Commit {m['git'] or '?'}.")
    out.append("")
    out.append("Command: `make bench` (= `scripts/bench.sh`). All on loopback, one origin "
               "(`sse-bench origin`), the client (`sse-bench client`) in its own process; every proxy "
               "started fresh per case. nginx: the hand-tuned SSE block, worker_processes = cores; "
               "HAProxy: nbthread = cores, `timeout client/server 1h`, `option http-no-delay`; sidecar: "
               "defaults (threads = cores) unless a note below says otherwise, `RUST_LOG=warn`.")
    out.append("")
    rounds = m.get("rounds", 1)
    if rounds > 1:
        out.append(f"Each figure is the median of {rounds} rounds (target order rotated each round); "
                   "capacity runs once.")
        out.append("")
    out.append("How to read it: lower is better except capacity, throughput and events delivered. "
               "Latency is measured from the origin's CLOCK_MONOTONIC stamp in each event to its parse in "
               "the client; \"added\" is proxy percentile − direct percentile from the same run. CPU is "
               "user+sys of the proxy's whole process group (nginx master + workers) over the measurement "
               "window, divided by events delivered. Ratios are sidecar ÷ peer (on added latency for the "
               "latency rows): < 1 means the sidecar uses less. Memory: the sidecar sends heartbeats "
               "every 1 s; nginx and HAProxy send none. Two cores are shared by the origin, the proxy "
               "and the client, so absolute figures include their contention; compare within a run. "
               "TLS rows: the client speaks TLS to the proxy (h2 with many streams per connection, or "
               "HTTP/1.1 with one), ALPN-negotiated on one listener; the app behind is plain HTTP/1.1, "
               "and \"added\" latency is still against direct plain HTTP/1.1, so it includes TLS and h2.")
    out.append("")
    for n in m.get("notes", []):
        out.append(f"**Note:** {n}")
        out.append("")
    # The floor (examples/floor_relay.rs) and the baseline (an earlier sidecar binary) are
    # yardsticks, not peers: their columns and ratios appear only when they ran.
    extra = [y for y in YARDSTICKS if any(c["target"] == y for c in cases)]
    costs = [y for y in COSTS if any(c["target"] == y for c in cases)]
    out.append("| workload | metric | direct | sidecar | nginx | haproxy | "
               + "".join(f"{y} | " for y in extra + costs)
               + "sidecar/nginx | sidecar/haproxy | " + "".join(f"sidecar/{y} | " for y in extra)
               + "".join(f"{y}/sidecar | " for y in costs) + "goal |")
    out.append("|---" * (9 + 2 * len(extra) + 2 * len(costs)) + "|")
    for r in rows:
        if not r["values"]:
            continue
        v = r["values"]
        c = r["compare"]
        ratios = [ratio(c.get("sidecar"), c.get(p)) for p in ["nginx", "haproxy"] + extra]
        ratios += [ratio(c.get(y), c.get("sidecar")) for y in costs]
        g, met = goal(r) if not m["smoke"] else ("", None)
        gtxt = f"{g} {'✓' if met else '✗'}" if met is not None else g
        cells = [r["workload"], r["metric"]] + [v.get(t, "—") for t in ("direct", "sidecar", "nginx", "haproxy")]
        cells += [v.get(y, "—") for y in extra + costs]
        cells += [fmt(x, 2) + "×" if x is not None else "—" for x in ratios]
        cells.append(gtxt)
        out.append("| " + " | ".join(str(x) for x in cells) + " |")
    out.append("")
    # Tail latency is the noisiest figure: each round's added p99, so a median is not taken on faith.
    for r in rows:
        if r["key"].endswith("latency_added_p99_us") and len(next(iter(r["per_round"].values()), [])) > 1:
            per = "; ".join(f"{t} " + ", ".join(signed(v) for v in vs)
                            for t, vs in r["per_round"].items())
            out.append(f"Added p99 µs by round, {r['workload']}: {per}.")
            out.append("")
    ran = {c["workload"] for c in cases}
    out.append("Workloads: " + "; ".join(f"{k}: {v}" for k, v in m["params"].items() if k in ran) + ".")
    out.append("")
    out.append("<details><summary>every case</summary>")
    out.append("")
    out.append("| workload | round | target | status | streams | held | failures | events (window) | comments | "
               "p50/p99/p99.9 µs | CPU s | RSS idle→loaded KiB | load1 |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        r = c["report"]
        if not r:
            out.append(f"| {c['workload']} | {c['round']} | {c['target']} | {c['status']} | | | | | | | | | {c['load1']} |")
            continue
        l, p = r["latency_us"], r["proxy"] or {}
        fails = ", ".join(f"{k} {v}" for k, v in r["failures"].items() if v) or "0"
        out.append(f"| {c['workload']} | {c['round']} | {c['target']} | ok | {r['streams']} | {r['held']} | {fails} | "
                   f"{r['events_window']} | {r['comments_window']} | {l['p50']}/{l['p99']}/{l['p999']} | "
                   f"{p.get('cpu_s_window', '—')} | {p.get('rss_idle_kib', '—')}→{p.get('rss_loaded_kib', '—')} | "
                   f"{c['load1']} |")
    out.append("")
    out.append("</details>")
    out.append("")
    if failures:
        out.append("**Failed cases:**")
        out.append("")
        for f in failures:
            out.append(f"- {f}")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    meta = json.load(open(a.meta))
    cases = load_cases(a.cases)
    rows = build_rows(cases)
    failures = []
    for c in cases:
        for p in problems(c, a.smoke):
            failures.append(f"{c['workload']} / {c['target']}: {p}")
    if not cases:
        failures.append("no case ran")
    md = markdown(meta, rows, cases, failures)
    with open(a.md, "w") as f:
        f.write(md + "\n")
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "rows": rows, "cases": cases, "failures": failures}, f, indent=1)
    print(md)
    if failures:
        print(f"bench: {len(failures)} failed case(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
