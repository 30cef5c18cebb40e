#!/usr/bin/env python3
"""Turn a bench/run results directory into markdown tables (printed to stdout) and summary.json.

Usage: report.py RESULTS_DIR
"""

import json
import os
import re
import sys

ENDPOINTS = [
    ("healthz", "GET /healthz"),
    ("read", "GET /fhir/Patient/{id}"),
    ("obs", "GET /fhir/Observation?patient={id}&category=laboratory&date=ge2015-01-01"),
    ("name", "GET /fhir/Patient?name={prefix}"),
    ("read-any", "uncached: GET /fhir/{type}/{id}, any of ~190k resources"),
    ("obs-nc", "uncached: Observation search, date=ge2015-01-01T00:MM:SSZ (60k keys)"),
    ("name-nc", "uncached: name search, _count=50..249 (57k keys)"),
]

GOAL_IMPORT = 10_000
GOAL_READ_RATIO = 0.6
GOAL_SEARCH_RPS = 16_000
GOAL_SEARCH_P99_MS = 10.0
GOAL_RSS_MB = 150.0


def read_kv(path):
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    out[k] = v
    return out


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def parse_import(d):
    res = {}
    try:
        with open(os.path.join(d, "import.log")) as f:
            text = f.read()
    except OSError:
        return res
    m = re.search(
        r"imported (\d+) files: (\d+) resources written, (\d+) unchanged, (\d+) files failed, ([\d.]+) s \((\d+) resources/s\)",
        text,
    )
    if m:
        res.update(
            files=int(m.group(1)), written=int(m.group(2)), unchanged=int(m.group(3)),
            failed=int(m.group(4)), seconds=float(m.group(5)), rate=int(m.group(6)),
        )
    try:
        with open(os.path.join(d, "import.time")) as f:
            t = f.read()
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
        if m:
            res["max_rss_kb"] = int(m.group(1))
        m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", t)
        if m:
            parts = [float(p) for p in m.group(1).split(":")]
            sec = 0.0
            for p in parts:
                sec = sec * 60 + p
            res["wall"] = sec
        m = re.search(r"User time \(seconds\): ([\d.]+)", t)
        if m:
            res["user"] = float(m.group(1))
        m = re.search(r"System time \(seconds\): ([\d.]+)", t)
        if m:
            res["sys"] = float(m.group(1))
    except OSError:
        pass
    b = read_json(os.path.join(d, "cpu-import.before.json"))
    a = read_json(os.path.join(d, "cpu-import.after.json"))
    if a and b and "user" in res:
        wall = a["wall"] - b["wall"]
        hz = a["hz"]
        res["postgres_cores"] = (a["postgres_ticks"] - b["postgres_ticks"]) / hz / wall
        machine = (a["machine_busy_ticks"] - b["machine_busy_ticks"]) / hz / wall
        res["other_cores"] = max(0.0, machine - (res["user"] + res["sys"]) / wall - res["postgres_cores"])
    return res


def parse_load(d, ep):
    w = read_json(os.path.join(d, f"wrk-{ep}.json"))
    if not w:
        return None
    out = {
        "rps": w["requests"] / (w["duration_us"] / 1e6),
        "requests": w["requests"],
        "p50_ms": w["latency_us"]["p50"] / 1000,
        "p99_ms": w["latency_us"]["p99"] / 1000,
        "max_ms": w["latency_us"]["max"] / 1000,
        "errors": sum(w["errors"].values()),
        "non2xx": w["errors"]["status"],
        "kb_per_resp": w["bytes"] / max(w["requests"], 1) / 1024,
    }
    q = read_json(os.path.join(d, f"quiet-{ep}.json"))
    if q:
        out["quiet"] = q
    b = read_json(os.path.join(d, f"cpu-{ep}.before.json"))
    a = read_json(os.path.join(d, f"cpu-{ep}.after.json"))
    c = read_json(os.path.join(d, f"wrk-{ep}.cpu.json"))
    if a and b:
        wall = a["wall"] - b["wall"]
        hz = a["hz"]
        out["server_cores"] = (a["server_ticks"] - b["server_ticks"]) / hz / wall
        out["postgres_cores"] = (a["postgres_ticks"] - b["postgres_ticks"]) / hz / wall
        out["machine_busy"] = (a["machine_busy_ticks"] - b["machine_busy_ticks"]) / max(
            a["machine_total_ticks"] - b["machine_total_ticks"], 1
        )
        out["machine_cores"] = (a["machine_busy_ticks"] - b["machine_busy_ticks"]) / hz / wall
        if c:
            out["wrk_cores"] = (c["user"] + c["sys"]) / max(c["wall"], 1e-9)
            out["other_cores"] = max(
                0.0, out["machine_cores"] - out["server_cores"] - out["postgres_cores"] - out["wrk_cores"])
    return out


def quiet_cell(q):
    if not q:
        return "–"
    return ("yes" if q.get("quiet") else "**no**") + f" ({q.get('busy_cores', 0):.2f} cores busy, waited {q.get('waited_s', 0):.0f} s)"


def fmt_int(n):
    return f"{n:,.0f}"


def yes(ok):
    return "**yes**" if ok else "**no**"


def main():
    root = sys.argv[1]
    env = read_kv(os.path.join(root, "env.txt"))
    phases = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isdir(d) and os.path.exists(os.path.join(d, "facts.txt")):
            facts = read_kv(os.path.join(d, "facts.txt"))
            ph = {
                "name": name,
                "backend": facts.get("backend", "?"),
                "copies": int(facts.get("copies", "1")),
                "facts": facts,
                "import": parse_import(d),
                "load": {ep: parse_load(d, ep) for ep, _ in ENDPOINTS},
                "targets": read_json(os.path.join(d, "targets.json")) or {},
            }
            phases.append(ph)
    order = {"sqlite": 0, "postgres": 1}
    phases.sort(key=lambda p: (order.get(p["backend"], 9), p["copies"]))

    total_fixture = None
    for p in phases:
        if p["copies"] == 1 and p["import"].get("written") is not None:
            total_fixture = p["import"]["written"] + p["import"]["unchanged"]

    L = []
    L.append(f"Run {os.path.basename(os.path.normpath(root))}: {env.get('date', '?')}; "
             f"{env.get('nproc', '?')} cores ({env.get('cpu_model', '?')}), {env.get('mem_total', '?')}, "
             f"{env.get('kernel', '?')}; binary built {env.get('binary_built', '?')} "
             f"(sha256 {env.get('binary_sha256', '?')}…); wrk {env.get('wrk_args', '?')}, "
             "load generator on the same machine.")
    L.append("")

    head = "| measure | goal | " + " | ".join(
        f"{p['backend']} ×{p['copies']}" for p in phases) + " |"
    L.append(head)
    L.append("|---|---|" + "---|" * len(phases))

    def row(label, goal, cells):
        L.append(f"| {label} | {goal} | " + " | ".join(cells) + " |")

    # Import
    cells = []
    for p in phases:
        i = p["import"]
        if "rate" in i:
            n = i["written"] + i["unchanged"]
            cell = f"{fmt_int(i['rate'])}/s ({fmt_int(n)} in {i['seconds']:.1f} s)"
            if p["backend"] == "sqlite":
                cell += " " + yes(i["rate"] >= GOAL_IMPORT)
            cells.append(cell)
        else:
            cells.append("–")
    row("import rate (resources/s)", "≥ 10,000/s (SQLite)", cells)
    row("import wall time, incl. start + ANALYZE", "", [
        f"{p['import']['wall']:.1f} s" if "wall" in p["import"] else "–" for p in phases])
    row("import max RSS", "", [
        f"{p['import']['max_rss_kb'] / 1024:.0f} MB" if "max_rss_kb" in p["import"] else "–" for p in phases])
    row("import CPU (user+sys) / wall", "", [
        f"{(p['import']['user'] + p['import']['sys']) / p['import']['wall']:.2f} cores"
        if "user" in p["import"] and p["import"].get("wall") else "–" for p in phases])
    # The import's PostgreSQL backends exit before the second snapshot, so their CPU cannot be
    # told apart: for PostgreSQL this is everything but the importer (backends included).
    row("import: CPU of all other processes (PostgreSQL backends included)", "", [
        f"{p['import']['other_cores'] + p['import']['postgres_cores']:.2f} cores"
        if "other_cores" in p["import"] else "–" for p in phases])
    row("resources in database (current versions)", "", [
        p["facts"].get("resources_in_db", "?") if p["facts"].get("resources_in_db", "?") == "?"
        else fmt_int(int(p["facts"]["resources_in_db"])) for p in phases])
    row("database size", "", [
        f"{int(p['facts'].get('db_bytes_after_import', 0)) / 2**20:.0f} MB" for p in phases])

    for ep, label in ENDPOINTS:
        cells = []
        for p in phases:
            r = p["load"].get(ep)
            if not r:
                cells.append("–")
                continue
            cell = f"{fmt_int(r['rps'])} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
            if r["errors"]:
                cell += f", **{r['errors']} errors ({r['non2xx']} non-2xx)**"
            if ep in ("read", "read-any"):
                h = p["load"].get("healthz")
                if h:
                    ratio = r["rps"] / h["rps"]
                    cell += f"; {ratio:.2f} × healthz {yes(ratio >= GOAL_READ_RATIO)}"
            if ep in ("obs", "name", "obs-nc", "name-nc"):
                ok = r["rps"] >= GOAL_SEARCH_RPS and r["p99_ms"] <= GOAL_SEARCH_P99_MS and not r["errors"]
                cell += " " + yes(ok)
            cells.append(cell)
        goal = {
            "healthz": "(reference)",
            "read": "≥ 0.6 × /healthz req/s",
            "obs": "≥ 16k req/s, p99 ≤ 10 ms",
            "name": "≥ 16k req/s, p99 ≤ 10 ms",
            "read-any": "(same goal, without the cache)",
            "obs-nc": "(same goal, without the cache)",
            "name-nc": "(same goal, without the cache)",
        }[ep]
        row(f"`{label}`", goal, cells)

    row("server VmRSS after import (idle, just started)", "", [
        f"{int(p['facts'].get('rss_kb_after_import', 0)) / 1024:.0f} MB" for p in phases])
    cells = []
    for p in phases:
        mb = int(p["facts"].get("rss_kb_after_load", 0)) / 1024
        cells.append(f"{mb:.0f} MB {yes(mb <= GOAL_RSS_MB)}")
    row("server VmRSS after the load", "≤ 150 MB", cells)
    L.append("")

    for p in phases:
        if "server_restart" in p["facts"]:
            L.append(f"Note: in {p['backend']} ×{p['copies']} the server process vanished during the run "
                     f"(ended from outside; last: {p['facts']['server_restart']}) and was restarted; "
                     "the affected endpoint was measured again and the memory figures are those of the new process.")
            L.append("")

    # What the searches return
    L.append("Search result sizes (default page size 50): ")
    for p in phases:
        t = p["targets"]
        load = p["load"]
        if not t:
            continue
        L.append(
            f"- {p['backend']} ×{p['copies']}: Observation search mean {t.get('obs_mean_matches', 0):.1f} matches per patient "
            f"(max {t.get('obs_max_matches')}, {t.get('obs_zero_match_ids')} of {t.get('read_ids')} ids have none), "
            f"{(load.get('obs') or {}).get('kb_per_resp', 0):.1f} KiB per response; "
            f"name search over {t.get('name_prefixes')} prefixes, mean ≥ {t.get('name_mean_matches', 0):.1f} "
            f"family-name matches (max {t.get('name_max_matches')}), "
            f"{(load.get('name') or {}).get('kb_per_resp', 0):.1f} KiB per response."
        )
    L.append("")

    # CPU
    L.append("CPU during each load (cores of 2; 1.00 = one core busy):")
    L.append("")
    L.append("| run | endpoint | server | postgres | wrk | other processes | machine busy | quiet before start |")
    L.append("|---|---|---|---|---|---|---|---|")
    for p in phases:
        for ep, _ in ENDPOINTS:
            r = p["load"].get(ep)
            if not r or "server_cores" not in r:
                continue
            L.append(
                f"| {p['backend']} ×{p['copies']} | {ep} | {r['server_cores']:.2f} | "
                f"{r['postgres_cores']:.2f} | {r.get('wrk_cores', 0):.2f} | {r.get('other_cores', 0):.2f} | "
                f"{100 * r['machine_busy']:.0f}% | {quiet_cell(r.get('quiet'))} |"
            )
    L.append("")
    print("\n".join(L))

    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump({"env": env, "phases": phases}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
