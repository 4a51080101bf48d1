"""Load test of the search service (`reidkit serve`) against `search_person` called directly, and with
hostile requests mixed in.

Gallery: Market-1501's test split (`bounding_box_test`, 19,732 crops) ingested once with
`reidkit ingest --images` into bench/out/service_gallery (reused when present). Queries: pictures from
Market-1501's `query` folder, cycled. Timed phases, one after another on the same machine:

1. **direct**: `search_person` in this process from `--workers` threads (the service's search-pool size),
   the same model (the shipped default, torch, as `reidkit search`) and defaults: the ceiling;
2. **service**: `reidkit serve` (its default settings) in its own process, `--clients` concurrent HTTP
   clients (asyncio + httpx, this process) posting a query picture to `POST /search` in a loop over loopback;
3. **service, no queue**: as 2 with as many clients as search threads, for the latency of one search
   when nothing waits in line;
4. **quiet / hostile** (issue 22), alternated `--rounds` times: `--ordinary` clients as in 2 alone (quiet),
   then the same clients with `--hostile` more sending, as fast as they are answered, requests meant to
   hurt: a 40-megapixel black PNG of 116 KB, sixteen of them in one request, the largest picture the
   service decodes (a 16-megapixel PNG), pictures in formats it does not read (ICO, TGA, PPM, QOI, EPS),
   a body sent at a few bytes a second, headers never finished. Done when the ordinary searches' p99
   latency in the hostile phases is within 2x of the quiet phases', with no server error (5xx, dropped
   connection) for anyone.

Searches/s count the answers completed inside each phase's window; latencies are per request as the
client sees it (with 50 clients sharing `--workers` threads: mostly the wait in the service's line).
The clients share the CPUs with the service. Writes the `service_load` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import ROOT, command_line, machine, write_section

DATA = Path(os.environ.get("REIDKIT_DATA", ROOT.parent / "shared" / "datasets")) / "market1501"
REIDKIT = Path(sys.executable).with_name("reidkit")
HOSTILE = ("huge", "sixteen huge", "largest decoded", "bad format", "slow body", "slow headers")


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
    reference = {q.name: search_person(g, emb, [str(q)], model_info=info).public().to_dict() for q in queries[:3]}
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


# -- hostile requests ----------------------------------------------------------------------------------------
def _encoded(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def hostile_payloads(query: Path) -> dict[str, list[list[tuple[str, bytes]]]]:
    """Per kind, the requests' pictures (file name, bytes)."""
    from PIL import Image

    huge = _encoded(Image.new("RGB", (7700, 5200)), "PNG")  # 40 MP, 116 KB: the picture
    largest = _encoded(Image.new("RGB", (4000, 4000)), "PNG")  # the service's cap, 16 MP: decoded
    person = Image.open(query).convert("RGB")
    formats = [(f"q.{f.lower()}", _encoded(person, f)) for f in ("ICO", "TGA", "PPM", "QOI", "EPS")]
    return {
        "huge": [[("huge.png", huge)]],
        "sixteen huge": [[(f"huge{i}.png", huge) for i in range(16)]],
        "largest decoded": [[("largest.png", largest)]],
        "bad format": [[f] for f in formats],
    }


def _multipart(files: list[tuple[str, bytes]], boundary: str = "reidkitbench") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _slow(host: str, port: int, kind: str, body: bytes, ctype: str, stop: float) -> tuple[str, float]:
    """One slow request: a body at 20 bytes a second, or headers at a line every 2 s; how it ended and when."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if kind == "slow body":
            head = (
                f"POST /search HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode())
            chunks = (body[i : i + 20] for i in range(0, len(body), 20))
            gap = 1.0
        else:
            writer.write(f"POST /search HTTP/1.1\r\nHost: {host}\r\n".encode())
            chunks = (f"X-Pad-{i}: {'a' * 10}\r\n".encode() for i in range(10_000))
            gap = 2.0
        answer = asyncio.ensure_future(reader.read(200))
        for chunk in chunks:
            done, _ = await asyncio.wait({answer}, timeout=gap)
            if done:
                break
            if time.perf_counter() > stop + 30:
                answer.cancel()
                return "still open", time.perf_counter() - t0
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
        try:
            data = await asyncio.wait_for(answer, 60)
        except (TimeoutError, ConnectionError):
            data = b""
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        return status, time.perf_counter() - t0
    finally:
        writer.close()


async def _ordinary(url: str, payloads: list[tuple[str, bytes]], clients: int, seconds: float, start_at: float) -> dict:
    """``clients`` posting query pictures in a loop for ``seconds`` from the wall-clock time ``start_at``."""
    import httpx

    lat: list[float] = []
    statuses: Counter = Counter()
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        await asyncio.sleep(max(0.0, start_at - time.time()))
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
                    statuses[r.status_code] += 1
                    ok = r.status_code == 200
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except Exception as exc:  # a dropped connection, a timeout
                    ok = False
                    statuses["dropped"] += 1
                    errors.append(repr(exc))
                t1 = time.perf_counter()
                if ok and t1 <= stop:
                    lat.append(t1 - t0)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return {
        "n": len(lat),
        "seconds": seconds,
        "lat": lat,
        "errors": sum(v for k, v in statuses.items() if k == "dropped" or (isinstance(k, int) and k >= 500)),
        "refused": statuses.get(429, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "error_samples": errors[:5],
    }


async def _attack(url: str, attackers: int, seconds: float, start_at: float, query: Path) -> dict:
    """``attackers`` clients, one hostile kind each in turn, as fast as they are answered, for ``seconds``."""
    import httpx

    hurt = hostile_payloads(query)
    person = _multipart([(query.name, query.read_bytes())])
    bad: dict[str, Counter] = {k: Counter() for k in HOSTILE}
    took: dict[str, list[float]] = {k: [] for k in HOSTILE}
    errors: list[str] = []
    host, port = url.removeprefix("http://").split(":")
    limits = httpx.Limits(max_connections=attackers, max_keepalive_connections=attackers)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop = time.perf_counter() + seconds

        async def attacker(i: int) -> None:
            kind = HOSTILE[i % len(HOSTILE)]
            j = 0
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                if kind in ("slow body", "slow headers"):
                    try:
                        status, _ = await _slow(host, int(port), kind, *person, stop)
                    except ConnectionError:
                        status = "refused"
                else:
                    files = hurt[kind][j % len(hurt[kind])]
                    j += 1
                    try:
                        r = await http.post("/search", files=[("image", (nm, d, "image/png")) for nm, d in files])
                        status = str(r.status_code)
                    except Exception as exc:
                        status = "dropped"
                        errors.append(f"{kind}: {exc!r}")
                bad[kind][status] += 1
                took[kind].append(time.perf_counter() - t0)

        await asyncio.gather(*(attacker(i) for i in range(attackers)))
    return {
        "errors": sum(v for c in bad.values() for k, v in c.items() if k == "dropped" or k.startswith("5")),
        "hostile": {k: dict(c) for k, c in bad.items() if c},
        "hostile_time": {k: float(np.median(v)) for k, v in took.items() if v},
        "error_samples": errors[:5],
    }


def _phase(url: str, payloads: list[tuple[str, bytes]], query: Path, ordinary: int, hostile: int,
           seconds: float) -> dict:  # fmt: skip
    """``ordinary`` clients here and ``hostile`` ones in a process of their own (so that their work on the
    client side does not delay the ordinary clients' event loop), started together."""
    if not hostile:
        return asyncio.run(_ordinary(url, payloads, ordinary, seconds, time.time()))
    start_at = time.time() + 8  # the attacker process imports and makes its pictures first
    cmd = [sys.executable, __file__, "--attack", url, "--hostile", str(hostile), "--hostile-seconds", str(seconds),
           "--start-at", str(start_at), "--query", str(query)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    res = asyncio.run(_ordinary(url, payloads, ordinary, seconds, start_at))
    out, _ = proc.communicate(timeout=seconds + 120)
    if proc.returncode != 0:
        raise SystemExit(f"the attacker process failed ({proc.returncode})")
    hurt = json.loads(out.strip().splitlines()[-1])
    return {
        **res,
        **hurt,
        "errors": res["errors"] + hurt["errors"],
        "error_samples": res["error_samples"] + hurt["error_samples"],
    }


def service(gallery: Path, queries: list[Path], workers: int, phases: list[dict]) -> list[dict]:
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
        for ph in phases:
            la = load()
            print(f"  {ph['name']}: {ph['clients']} + {ph.get('hostile', 0)} hostile, {ph['seconds']:.0f} s "
                  f"(load {la:.2f})", flush=True)  # fmt: skip
            res = _phase(url, payloads, queries[0], ph["clients"], ph.get("hostile", 0), ph["seconds"])
            out.append({**ph, **res, "load": la, "answers": answers})
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


def merged(runs: list[dict]) -> dict:
    """Phases of one kind (quiet or hostile) over the rounds, as one."""
    out = {
        "n": sum(r["n"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }
    out["lat"] = [x for r in runs for x in r["lat"]]
    out["load"] = max(r["load"] for r in runs)
    out["refused"] = sum(r["refused"] for r in runs)
    hostile: dict[str, Counter] = {}
    for r in runs:
        for k, c in r.get("hostile", {}).items():
            hostile.setdefault(k, Counter()).update(c)
    out["hostile"] = {k: dict(c) for k, c in hostile.items()}
    out["hostile_time"] = {
        k: float(np.median([r["hostile_time"][k] for r in runs if k in r.get("hostile_time", {})])) for k in hostile
    }
    return out


def render(res: dict) -> str:
    """The BENCHMARKS.md section from a run's summary (bench/out/service_load.json)."""
    w, c, made = res["workers"], res["clients"], res["gallery"]
    lines = [
        "| path | clients | search threads | searches | searches/s | p50 latency (ms) | p99 latency (ms) | server errors | load avg at start |",
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
        "share of the machine: compare the ratios, not the rates."
        if max(loads) > 1.0
        else "The machine was otherwise idle (1-minute load average <= 1 at every phase start)."
    )
    quiet = next((r for r in res["rows"] if r["path"].endswith("no queue")), None)
    text = f"""## Search service under load (issues 12 and 22)
`reidkit serve` against `search_person` called directly, on the same machine, one phase after the other. Gallery:
Market-1501 `bounding_box_test`, {made["sightings"]:,} crops, {ingest}. Queries: {res["queries"]} pictures from
Market-1501 `query`, cycled. Model: the shipped default (torch, as `reidkit search`); default search options (top 200,
re-ranked, review 8). Direct: `search_person` from {w} threads in one process, the ceiling. Service: `reidkit serve` in
its own process with its default settings and a search pool of {w} threads (torch and FAISS at their default thread
counts, as in `reidkit search`, so the answers are bit-identical), {c} concurrent clients (asyncio + httpx in the
benchmark's process) each posting one picture to `POST /search` over loopback for {svc["seconds"]:.0f} s; then {w}
clients for {quiet["seconds"] if quiet else 0:.0f} s (no queue). {res["machine"]}.

{chr(10).join(lines)}

**The service delivers {ratio:.0%} of the direct throughput, with {svc["errors"]} errors** (goal: >= 80 %, no errors:
{goal}). Its answers are the same JSON as `search_person`'s as the service hands it out ({"identical" if res["same"] else "NOT identical"} on the
{res["compared"]} queries compared: `SearchResult.public()`, sources by name and no server path; the service names a
picture by its upload file name, the CLI by its path). With {c} clients sharing {w} search threads the latency is the
wait in line ({c} / {rate:.1f} searches/s = {c / rate:.1f} s); the no-queue row is one search on its own over
HTTP{f", against {direct['p50']} ms direct" if quiet else ""}. {note}"""
    h = res.get("hostile")
    if h:
        q, b = h["quiet"], h["mixed"]
        qp, bp = percentiles(q["lat"])[1], percentiles(b["lat"])[1]
        within = bp <= 2 * qp and q["errors"] == 0 and b["errors"] == 0
        kinds = []
        for k in HOSTILE:
            if k in b["hostile"]:
                answers = ", ".join(f"{s}: {n:,}" for s, n in sorted(b["hostile"][k].items()))
                kinds.append(
                    f"| {k} | {sum(b['hostile'][k].values()):,} | {answers} | {b['hostile_time'][k] * 1000:,.0f} |"
                )
        hq, hb = summary(q, "", ""), summary(b, "", "")
        noise = (
            " Under the other jobs' load the phases differ by more than the hostile clients cost: the two p99s are "
            "equal within that noise."
            if bp < 1.1 * qp and max(q["load"], b["load"]) > 1.0
            else ""
        )
        text += f"""

**With hostile requests mixed in** (issue 22): {h["ordinary"]} ordinary clients alone (quiet), then the same
{h["ordinary"]} with {h["attackers"]} hostile clients ({h["ordinary"] + h["attackers"]} in all; the hostile ones in a
process of their own, so their client-side work does not hold up the ordinary clients' event loop), alternated
{h["rounds"]} times, {h["seconds"]:.0f} s a phase, one `reidkit serve` with its defaults (16 megapixels per picture, 24
decoded per search, a lowest-priority thread for large pictures, 64 searches in line, refusals for bad pictures
answered after 1 s, 20 s to send the headers or the body). Each hostile client sends one kind, as fast as it is
answered: *huge*, the issue's 40-megapixel black PNG of 116 KB; *sixteen huge*, sixteen of them in one request;
*largest decoded*, a 16-megapixel black PNG, the largest picture the service decodes; *bad format*, the query
picture as ICO, TGA, PPM, QOI and EPS in turn; *slow body*, a search whose body comes at 20 bytes a second; *slow
headers*, a request line and then a header line every 2 s.

| ordinary searches | searches | searches/s | p50 (ms) | p99 (ms) | refused (429) | server errors (5xx, dropped) | load avg at start (max) |
|---|---|---|---|---|---|---|---|
| quiet | {q["n"]:,} | {q["n"] / q["seconds"]:.1f} | {hq["p50"]} | {hq["p99"]} | {q["refused"]} | {q["errors"]} | {q["load"]:.2f} |
| with hostile requests | {b["n"]:,} | {b["n"] / b["seconds"]:.1f} | {hb["p50"]} | {hb["p99"]} | {b["refused"]} | {b["errors"]} | {b["load"]:.2f} |

| hostile kind | requests | answers | median time to answer (ms) |
|---|---|---|---|
{chr(10).join(kinds)}

**Ordinary searches' p99 with the hostile clients: {bp / qp:.2f}x the quiet run's, with {q["errors"] + b["errors"]}
server errors** (goal: within 2x and none: {"met" if within else "not met"}). Refused pictures cost a header read and
wait their second without CPU, the largest pictures are decoded with the CPU searches leave (hence their seconds),
slow clients are cut off at 20 s (408, or the connection closed) and never hold a search thread.{noise}"""
    return text + f"\n\nCommand: `{res['command']}`"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=Path, default=ROOT / "bench" / "out" / "service_gallery")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="search threads (both paths)")
    ap.add_argument("--queries", type=int, default=200, help="query pictures cycled (spread over the query set)")
    ap.add_argument("--quiet-seconds", type=float, default=10.0, help="the no-queue phase (0: skip)")
    ap.add_argument("--ordinary", type=int, default=40, help="ordinary clients of the quiet and hostile phases")
    ap.add_argument("--hostile", type=int, default=10, help="hostile clients mixed in (0: no hostile phases)")
    ap.add_argument("--hostile-seconds", type=float, default=30.0, help="each quiet and each hostile phase")
    ap.add_argument("--rounds", type=int, default=2, help="quiet/hostile phase pairs, alternated")
    ap.add_argument("--hostile-only", action="store_true", help="skip the direct, 50-client and no-queue phases")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--attack", metavar="URL", help=argparse.SUPPRESS)  # the attacker process of a hostile phase
    ap.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--query", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from the last run's summary")
    args = ap.parse_args()
    out = ROOT / "bench" / "out" / "service_load.json"
    if args.attack:
        res = asyncio.run(_attack(args.attack, args.hostile, args.hostile_seconds, args.start_at, args.query))
        print(json.dumps(res))
        return
    if args.render_only:
        write_section("service_load", render(json.loads(out.read_text())))
        print(f"wrote the service_load section of BENCHMARKS.md from {out}")
        return

    made = ensure_gallery(args.gallery)
    print(("reused" if made["reused"] else "ingested"), made, flush=True)
    allq = sorted((DATA / "query").glob("*.jpg"))
    queries = allq[:: max(1, len(allq) // args.queries)][: args.queries]
    phases: list[dict] = []
    if not args.hostile_only:
        print(f"direct: search_person, {args.workers} threads, {args.seconds:.0f} s (load {load():.2f})", flush=True)
        d = direct(args.gallery, queries, args.workers, args.seconds)
        phases.append({"name": "service", "clients": args.clients, "seconds": args.seconds})
        if args.quiet_seconds:
            phases.append({"name": "no queue", "clients": args.workers, "seconds": args.quiet_seconds})
    if args.hostile:
        for r in range(args.rounds):
            phases.append({"name": f"quiet {r + 1}", "clients": args.ordinary, "seconds": args.hostile_seconds})
            phases.append({"name": f"hostile {r + 1}", "clients": args.ordinary, "hostile": args.hostile,
                           "seconds": args.hostile_seconds})  # fmt: skip
    print("service:", flush=True)
    s = service(args.gallery, queries, args.workers, phases)

    def unlabelled(x: dict) -> dict:
        return {**x, "query": {**x["query"], "labels": []}}  # the service names pictures by file name, not path

    previous = json.loads(out.read_text()) if out.is_file() else {}
    res = {**previous, "command": command_line(), "machine": machine(), "workers": args.workers}
    plain = [r for r in s if not r["name"].startswith(("quiet", "hostile"))]
    if plain:
        same = all(unlabelled(a) == unlabelled(d["reference"][n]) for n, a in plain[0]["answers"].items())
        rows = [summary(d, "`search_person` direct (ceiling)", "–")]
        rows += [
            summary(r, "service `POST /search`" + (", no queue" if i else ""), str(r["clients"]))
            for i, r in enumerate(plain)
        ]
        res.update(gallery={k: v for k, v in made.items() if k != "reused"}, queries=len(queries),
                   clients=args.clients, rows=rows, same=same, compared=len(plain[0]["answers"]))  # fmt: skip
    if args.hostile:
        res["hostile"] = {
            "ordinary": args.ordinary,
            "attackers": args.hostile,
            "rounds": args.rounds,
            "seconds": args.hostile_seconds,
            "quiet": merged([r for r in s if r["name"].startswith("quiet")]),
            "mixed": merged([r for r in s if r["name"].startswith("hostile")]),
            "phases": [{k: v for k, v in r.items() if k not in ("lat", "answers")} for r in s],
        }
    out.write_text(json.dumps(res, indent=1))
    md = render(res)
    print(md)
    for r in s:
        for e in r.get("error_samples", []):
            print("error:", r["name"], e)
    if not args.no_write:
        write_section("service_load", md)
        print("wrote the service_load section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
