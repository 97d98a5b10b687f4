"""Feedback service throughput and latency: `tasks/next` + `votes` at 1, 10 and 50 concurrent annotators.

    .venv/bin/python -m bench.feedback_service [--quick] [--clients 1,10,50] [--seconds 10] [--dbs sqlite,postgresql]

One real server (`rlhf-dist feedback serve`, uvicorn, one process) per database; the clients are
asyncio httpx clients in this process, each with its own annotator token, each looping
GET /api/v1/tasks/next -> POST /api/v1/votes. Per level: 1 s warm-up, then `--seconds` measured;
votes/s counts 201s in the measured window; p50/p95 are over every call in it. Goal: p95 < 50 ms at
50 clients on this 2-core machine (the clients share the 2 cores with the server).
Writes bench/results/feedback_service.json and a PNG. --quick (a smoke run of both databases): 1 and 10
clients, no think time, 2 s a level, results to bench/out/quick-results.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import SCRATCH, load, print_table, quick_results, save_png, wait_quiet, write_result

PAIRS_PER_LEVEL = 30_000
QUICK = {"clients": "1,10", "seconds": 2.0, "think": "0", "pairs": 3_000}


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _client(base: str, token: str, campaign: str, stop_at: float, measure_from: float, out: dict,
                  think_s: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            r = await http.get("/api/v1/tasks/next", params={"campaign": campaign})
            t1 = time.perf_counter()
            if r.status_code != 200:
                out["statuses"].append(r.status_code)
                break
            task = r.json()
            v = await http.post("/api/v1/votes", json={"task_id": task["task_id"], "choice": "left",
                                                       "confidence": 0.85, "request_id": uuid.uuid4().hex})
            t2 = time.perf_counter()
            out["statuses"].append(v.status_code)
            if t0 >= measure_from:
                out["next"].append(t1 - t0)
                out["vote"].append(t2 - t1)
                out["cycle"].append(t2 - t0)
                out["votes"] += v.status_code == 201
            if think_s:  # a person reading the next pair; jittered so clients do not march in step
                await asyncio.sleep(think_s * (0.5 + random.random()))


def measure_level(base: str, tokens: list[str], campaign: str, seconds: float, think_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"next": [], "vote": [], "cycle": [], "votes": 0, "statuses": []}
    start = time.perf_counter()
    warmup = max(1.0, 2.0 * think_s)  # past the first requests, which all clients send at once
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def run_all() -> None:
        await asyncio.gather(*(_client(base, t, campaign, stop_at, measure_from, out, think_s) for t in tokens))

    asyncio.run(run_all())
    calls = out["next"] + out["vote"]
    return {
        "clients": len(tokens), "think_s": think_s, "seconds": seconds, "votes": out["votes"],
        "votes_per_s": out["votes"] / seconds,
        "p50_ms": 1000 * _pct(calls, 0.5), "p95_ms": 1000 * _pct(calls, 0.95),
        "next_p50_ms": 1000 * _pct(out["next"], 0.5), "next_p95_ms": 1000 * _pct(out["next"], 0.95),
        "vote_p50_ms": 1000 * _pct(out["vote"], 0.5), "vote_p95_ms": 1000 * _pct(out["vote"], 0.95),
        "cycle_p95_ms": 1000 * _pct(out["cycle"], 0.95),
        "mean_call_ms": 1000 * statistics.fmean(calls) if calls else float("nan"),
        "server_errors": sum(s >= 500 for s in out["statuses"]),
        "non_2xx": sorted({s for s in out["statuses"] if s >= 300}),
    }


def run_db(kind: str, db_url: str, levels: list[int], seconds: float, max_load: float,
           thinks: list[float], pairs_per_level: int = PAIRS_PER_LEVEL) -> list[dict[str, Any]]:
    from rlhf_dist.data.records import ComparisonPair
    from rlhf_dist.feedback import admin
    from rlhf_dist.feedback.db import open_database
    from rlhf_dist.feedback.server_process import FeedbackServerProcess

    sessions = open_database(db_url)
    tokens = [admin.add_annotator(sessions, f"bench-{i}") for i in range(max(levels))]
    for think in thinks:
        for n in levels:
            pairs = [ComparisonPair(prompt=f"Prompt {i} for {n} clients.", response_a=f"Response A {i} " * 8,
                                    response_b=f"Response B {i} " * 8) for i in range(pairs_per_level)]
            admin.add_pairs(sessions, f"bench-{think}-{n}", pairs, overlap=1)
    server = FeedbackServerProcess(db_url, SCRATCH, admin_token=uuid.uuid4().hex, rate_limit_per_minute=0).start()
    rows = []
    try:
        for think in thinks:
            for n in levels:
                quiet = wait_quiet(max_load=max_load, max_wait_s=60)
                row = {"db": kind, **measure_level(server.url, tokens[:n], f"bench-{think}-{n}", seconds, think),
                       **quiet, "load_after": load()}
                print(f"[bench] {kind} {n} clients, think {think} s: {row['votes_per_s']:.0f} votes/s, "
                      f"p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms")
                rows.append(row)
    finally:
        server.stop()
    return rows


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for db, think in sorted({(r["db"], r["think_s"]) for r in rows}):
        mine = [r for r in rows if r["db"] == db and r["think_s"] == think]
        db = f"{db}, think {think:g} s"
        left.plot([r["clients"] for r in mine], [r["votes_per_s"] for r in mine], marker="o", label=db)
        right.plot([r["clients"] for r in mine], [r["p95_ms"] for r in mine], marker="o", label=db)
    right.axhline(50, color="grey", lw=0.8, ls=":", label="goal p95 50 ms")
    left.set(xlabel="concurrent annotators", ylabel="votes / s", title="throughput", xscale="log")
    right.set(xlabel="concurrent annotators", ylabel="p95 ms per call", title="p95 latency (next + vote calls)",
              xscale="log", yscale="log")
    left.legend()
    right.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, "feedback_service")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default=None, help="concurrency levels (comma-separated; default 1,10,50, "
                        "quick 1,10)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per level (default 10, quick 2)")
    parser.add_argument("--dbs", default="sqlite,postgresql", help="databases to measure")
    parser.add_argument("--think", default=None, help="seconds each client waits between votes (comma-separated; "
                        "default 0,1,5, quick 0): "
                        "0 = back-to-back requests (the service's capacity), 1 = one vote a second per client "
                        "(still far faster than people read two responses), 5 = closer to people (yet 2-6x faster)")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for this 1-min load before a level")
    parser.add_argument("--quick", action="store_true", help="smoke run: " + ", ".join(f"{k} {v}" for k, v in
                        QUICK.items()) + "; results to bench/out/quick-results")
    args = parser.parse_args()
    if args.quick:
        quick_results()
    defaults = QUICK if args.quick else {"clients": "1,10,50", "seconds": 10.0, "think": "0,1,5",
                                         "pairs": PAIRS_PER_LEVEL}
    args.clients, args.think = args.clients or defaults["clients"], args.think or defaults["think"]
    args.seconds = args.seconds or defaults["seconds"]
    levels = [int(x) for x in args.clients.split(",")]
    thinks = [float(x) for x in args.think.split(",")]
    rows: list[dict[str, Any]] = []
    for kind in args.dbs.split(","):
        if kind == "sqlite":
            path = SCRATCH / f"feedback-bench-{uuid.uuid4().hex[:8]}.sqlite"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows += run_db(kind, f"sqlite:///{path}", levels, args.seconds, args.max_load, thinks, defaults["pairs"])
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        elif kind == "postgresql":
            from rlhf_dist.feedback.server_process import LocalPostgres

            pg = LocalPostgres().start()
            try:
                rows += run_db(kind, pg.new_database(), levels, args.seconds, args.max_load, thinks, defaults["pairs"])
            finally:
                pg.stop()
        else:
            parser.error(f"--dbs: unknown database {kind!r} (sqlite, postgresql)")
    print_table("feedback service: tasks/next + votes", ["db", "think s", "clients", "votes/s", "p50 ms",
                                                          "p95 ms", "next p95", "vote p95", "5xx"],
                [[r["db"], r["think_s"], r["clients"], r["votes_per_s"], r["p50_ms"], r["p95_ms"], r["next_p95_ms"],
                  r["vote_p95_ms"], r["server_errors"]] for r in rows])
    goal = {f"{r['db']}, think {r['think_s']:g} s": r["p95_ms"] < 50 for r in rows if r["clients"] == 50}
    write_result("feedback_service", {"settings": {"levels": levels, "think_s": thinks, "seconds": args.seconds,
                                                   "pairs_per_level": defaults["pairs"],
                                                   "server": "uvicorn, 1 process"},
                                      "results": rows, "goal_p95_under_50ms_at_50_clients": goal})
    plot(rows)


if __name__ == "__main__":
    main()
