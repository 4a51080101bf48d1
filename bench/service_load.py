"""Load test of the search service (`reidkit serve`) against `search_person` called directly.

Gallery: Market-1501's test split (`bounding_box_test`, 19,732 crops) ingested once with
`reidkit ingest --images` into bench/out/service_gallery (reused when present). Queries: pictures from
Market-1501's `query` folder, cycled. Three timed phases, one after another on the same machine:

1. **direct**: `search_person` in this process from `--workers` threads (the service's search-pool size),
   the same model (the shipped default, torch, as `reidkit search`) and defaults: the ceiling;
2. **service**: `reidkit serve` in its own process, `--clients` concurrent HTTP clients (asyncio +
   httpx, this process) posting a query picture to `POST /search` in a loop over loopback;
3. **service, no queue**: as 2 with as many clients as search threads, for the latency of one search
   when nothing waits in line.

Searches/s count the answers completed inside each phase's window; latencies are per request as the
client sees it (phase 2 includes the wait in the service's queue: 50 clients share `--workers` threads).
The client shares the CPUs with the service. Writes the `service_load` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _common import ROOT, command_line, machine, write_section

DATA = Path(os.environ.get("REIDKIT_DATA", ROOT.parent / "shared" / "datasets")) / "market1501"
REIDKIT = Path(sys.executable).with_name("reidkit")


def load() -> float:
    return os.getloadavg()[0]


def ensure_gallery(gallery: Path) -> dict:
    """Ingest bounding_box_test once (what it took is kept beside the gallery); returns that record."""
    from reidkit.search.storage import Gallery

    test = DATA / "bounding_box_test"
    record = gallery.with_name(gallery.name + ".ingest.json")
    n_files = sum(1 for p in test.iterdir() if p.suffix == ".jpg")
    if (gallery / "gallery.db").is_file():
        with Gallery.open(gallery, create=False, read_only=True) as g:
            done = [s for s in g.sources() if s.uri.rstrip("/").endswith("bounding_box_test") and s.status == "done"]
            if done and len(g) == n_files:
                made = json.loads(record.read_text()) if record.is_file() else {"sightings": len(g)}
                return {**made, "reused": True}
    t0 = time.perf_counter()
    cmd = [str(REIDKIT), "ingest", str(test), "--images", "--gallery", str(gallery)]
    print("ingesting:", " ".join(cmd), flush=True)
    la = load()
    subprocess.run(cmd, check=True)
    sec = time.perf_counter() - t0
    with Gallery.open(gallery, create=False, read_only=True) as g:
        n = len(g)
    made = {"sightings": n, "seconds": round(sec), "rate": round(n / sec), "load": round(la, 1)}
    record.write_text(json.dumps(made))
    return {**made, "reused": False}


def percentiles(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    a = np.asarray(lat) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def direct(gallery: Path, queries: list[Path], threads: int, seconds: float) -> dict:
    """search_person from `threads` threads for `seconds`; also the answers to the first queries."""
    from reidkit.extract import make_embedder
    from reidkit.search.query.search import search_person
    from reidkit.search.storage import Gallery

    emb, info = make_embedder(None, None)
    g = Gallery.open(gallery, create=False, read_only=True)
    reference = {q.name: search_person(g, emb, [str(q)], model_info=info).to_dict() for q in queries[:3]}
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start = time.perf_counter() + 0.2
    stop = start + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < start:
            time.sleep(0.001)
        j = i
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            try:
                search_person(g, emb, [str(queries[j % len(queries)])], model_info=info)
            except Exception:
                errors[i] += 1
            t1 = time.perf_counter()
            if t1 <= stop:
                lat[i].append(t1 - t0)
            j += threads

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    la = load()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    g.close()
    flat = [x for row in lat for x in row]
    return {"n": len(flat), "seconds": seconds, "lat": flat, "errors": sum(errors), "load": la, "reference": reference}


async def _clients(url: str, payloads: list[tuple[str, bytes]], clients: int, seconds: float) -> dict:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        stop = start + seconds

        async def client(i: int) -> None:
            j = i
            while time.perf_counter() < stop:
                name, data = payloads[j % len(payloads)]
                j += clients
                t0 = time.perf_counter()
                try:
                    r = await http.post("/search", files={"image": (name, data, "image/jpeg")})
                    ok = r.status_code == 200
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except Exception as exc:  # a dropped connection, a timeout
                    ok = False
                    errors.append(repr(exc))
                t1 = time.perf_counter()
                if ok and t1 <= stop:
                    lat.append(t1 - t0)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return {"n": len(lat), "seconds": seconds, "lat": lat, "errors": len(errors), "error_samples": errors[:5]}


def service(gallery: Path, queries: list[Path], workers: int, phases: list[tuple[int, float]]) -> list[dict]:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(REIDKIT), "serve", "--gallery", str(gallery), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["gallery"]:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        payloads = [(q.name, q.read_bytes()) for q in queries]
        answers = {}
        for name, data in payloads[:3]:  # warm-up, and the answers to compare with search_person's
            r = httpx.post(f"{url}/search", files={"image": (name, data, "image/jpeg")}, timeout=120)
            r.raise_for_status()
            answers[name] = r.json()
        out = []
        for clients, seconds in phases:
            la = load()
            res = asyncio.run(_clients(url, payloads, clients, seconds))
            out.append({**res, "clients": clients, "load": la, "answers": answers})
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def summary(r: dict, name: str, clients: str) -> dict:
    p50, p99 = percentiles(r["lat"])
    return {"path": name, "clients": clients, "n": r["n"], "seconds": r["seconds"], "p50": round(p50), "p99": round(p99),
            "errors": r["errors"], "load": round(r["load"], 2)}  # fmt: skip


def render(res: dict) -> str:
    """The BENCHMARKS.md section from a run's summary (bench/out/service_load.json)."""
    w, c, made = res["workers"], res["clients"], res["gallery"]
    lines = [
        "| path | clients | search threads | searches | searches/s | p50 latency (ms) | p99 latency (ms) | errors | load avg at start |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['path']} | {r['clients']} | {w} | {r['n']:,} | {r['n'] / r['seconds']:.1f} | {r['p50']} | {r['p99']} "
            f"| {r['errors']} | {r['load']:.2f} |"
        )
    direct, svc = res["rows"][0], res["rows"][1]
    rate = svc["n"] / svc["seconds"]
    ratio = rate / (direct["n"] / direct["seconds"])
    ingest = "ingested once with `reidkit ingest --images`" + (
        f" in {made['seconds']} s ({made['rate']} img/s, load average {made['load']} at its start)"
        if "seconds" in made
        else ""
    )
    loads = [r["load"] for r in res["rows"]]
    goal = "met" if ratio >= 0.8 and svc["errors"] == 0 else "not met"
    note = (
        f"**Taken under load**: other jobs shared the 2 cores (1-minute load average {min(loads):.1f}-{max(loads):.1f} at "
        "the phase starts), so the rates are low and the phases, run one after the other, did not get exactly the same "
        "share of the machine: compare the ratio, not the rates."
        if max(loads) > 1.0
        else "The machine was otherwise idle (1-minute load average <= 1 at every phase start)."
    )
    quiet = res["rows"][2] if len(res["rows"]) > 2 else None
    return f"""## Search service under load (issue 12)
`reidkit serve` against `search_person` called directly, on the same machine, one phase after the other. Gallery:
Market-1501 `bounding_box_test`, {made["sightings"]:,} crops, {ingest}. Queries: {res["queries"]} pictures from
Market-1501 `query`, cycled. Model: the shipped default (torch, as `reidkit search`); default search options (top 200,
re-ranked, review 8). Direct: `search_person` from {w} threads in one process, the ceiling. Service: `reidkit serve` in
its own process with a search pool of {w} threads (torch and FAISS at their default thread counts, as in `reidkit
search`, so the answers are bit-identical), {c} concurrent clients (asyncio + httpx in the benchmark's process) each
posting one picture to `POST /search` over loopback for {svc["seconds"]:.0f} s; then {w} clients for
{quiet["seconds"] if quiet else 0:.0f} s (no queue). {res["machine"]}.

{chr(10).join(lines)}

**The service delivers {ratio:.0%} of the direct throughput, with {svc["errors"]} errors** (goal: >= 80 %, no errors:
{goal}). Its answers are the same JSON as `search_person`'s ({"identical" if res["same"] else "NOT identical"} on the
{res["compared"]} queries compared; the service names a picture by its upload file name, the CLI by its path). With
{c} clients sharing {w} search threads the latency is the wait in line ({c} / {rate:.1f} searches/s = {c / rate:.1f} s);
the no-queue row is one search on its own over HTTP{f", against {direct['p50']} ms direct" if quiet else ""}. {note}

Command: `{res["command"]}`"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=Path, default=ROOT / "bench" / "out" / "service_gallery")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="search threads (both paths)")
    ap.add_argument("--queries", type=int, default=200, help="query pictures cycled (spread over the query set)")
    ap.add_argument("--quiet-seconds", type=float, default=10.0, help="the no-queue phase (0: skip)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from the last run's summary")
    args = ap.parse_args()
    out = ROOT / "bench" / "out" / "service_load.json"
    if args.render_only:
        write_section("service_load", render(json.loads(out.read_text())))
        print(f"wrote the service_load section of BENCHMARKS.md from {out}")
        return

    made = ensure_gallery(args.gallery)
    print(("reused" if made["reused"] else "ingested"), made, flush=True)
    allq = sorted((DATA / "query").glob("*.jpg"))
    queries = allq[:: max(1, len(allq) // args.queries)][: args.queries]
    print(f"direct: search_person, {args.workers} threads, {args.seconds:.0f} s (load {load():.2f})", flush=True)
    d = direct(args.gallery, queries, args.workers, args.seconds)
    phases = [(args.clients, args.seconds)] + ([(args.workers, args.quiet_seconds)] if args.quiet_seconds else [])
    print(f"service: {' then '.join(f'{c} clients x {s:.0f} s' for c, s in phases)}", flush=True)
    s = service(args.gallery, queries, args.workers, phases)

    def unlabelled(x: dict) -> dict:
        return {**x, "query": {**x["query"], "labels": []}}  # the service names pictures by file name, not path

    same = all(unlabelled(a) == unlabelled(d["reference"][n]) for n, a in s[0]["answers"].items())
    rows = [summary(d, "`search_person` direct (ceiling)", "–")]
    rows += [
        summary(r, "service `POST /search`" + (", no queue" if i else ""), str(r["clients"])) for i, r in enumerate(s)
    ]
    res = {
        "gallery": {k: v for k, v in made.items() if k != "reused"},
        "queries": len(queries),
        "workers": args.workers,
        "clients": args.clients,
        "rows": rows,
        "same": same,
        "compared": len(s[0]["answers"]),
        "machine": machine(),
        "command": command_line(),
    }
    out.write_text(json.dumps(res, indent=1))
    md = render(res)
    print(md)
    for r in s:
        for e in r.get("error_samples", []):
            print("error:", e)
    if not args.no_write:
        write_section("service_load", md)
        print("wrote the service_load section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
