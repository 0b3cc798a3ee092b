"""Benchmark: `campusgps serve` throughput and latency for POST /v1/locate, on loopback.

    .venv/bin/python benchmarks/serve.py [--methods mean,regression,retrieval] [--requests 120]
                                         [--concurrency 1,8] [--size 320x240] [--work DIR]

For each method: trains a model with `campusgps train` (cached under --work), starts the real
`campusgps serve MODEL` in a subprocess on a free 127.0.0.1 port, warms it up, then sends a bounded number
of requests (JPEG queries re-encoded at --size, default 320x240) with 1 and 8 concurrent clients (one
keep-alive HTTP connection each). Reports requests/s, client-side p50/p95 latency, the server's own
p50 (elapsed_ms), the mean micro-batch size, and errors (any non-200 or transport error).

Data: a simulated campus (`campusgps synth --preset small --photos 400 --queries 40`, ingest,
split); queries are its separate query session.

Prints a table and writes benchmarks/results/serve.json. Loopback only; nothing else is contacted.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from common import ROOT, simulated_campus


def cli(*args, check=True, timeout=900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "campusgps", *map(str, args)]
    print("$ campusgps " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=check, env={**os.environ, "CAMPUSGPS_PROGRESS": "0"},
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def prepare_data(work: Path, preset: str, seed: int, photos: int, queries: int):
    """-> (dataset, query image paths, description)."""
    from campusgps.dataset import Dataset

    sim, ds_dir, _ = simulated_campus(work, preset, seed, "--photos", photos, "--queries", queries, queries=False)
    qs = sorted((sim / "queries").glob("*.jpg"))
    ds = Dataset.open(ds_dir)
    return ds, qs, (f"synth preset={preset} seed={seed} --photos {photos}: {len(ds)} mapping "
                    f"photos (train/val), queries = OUT/queries ({len(qs)})")


def encode_queries(paths, size, limit=32) -> list[bytes]:
    from PIL import Image

    out = []
    for p in paths[:limit]:
        im = Image.open(p).convert("RGB")
        im = im.resize(size, Image.Resampling.BILINEAR) if im.size != size else im
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def train(ds_root: Path, method: str, out: Path) -> str | None:
    """Train (once) with the real CLI; returns an error line or None."""
    if out.exists():
        return None
    if method == "mean":
        from campusgps.dataset import Dataset
        from campusgps.localizers.base import MeanLocalizer

        MeanLocalizer().fit(Dataset.open(ds_root)).save(out)
        return None
    try:
        r = cli("train", ds_root, "--method", method, "--out", out, check=False, timeout=1800)
    except subprocess.TimeoutExpired:
        return "training took longer than 30 min"
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "campusgps", "serve", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().strip()[-500:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not come up within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def load(url: str, bodies: list[bytes], n: int, concurrency: int) -> dict:
    """n requests spread over `concurrency` clients, each with its own keep-alive connection."""
    import httpx

    lat_ms, server_ms, batch, errors, err_samples = [], [], [], 0, []
    lock = threading.Lock()
    counter = iter(range(n))

    def client():
        nonlocal errors
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = c.post(url + "/v1/locate", files={"image": ("q.jpg", body, "image/jpeg")})
                    dt = (time.perf_counter() - t0) * 1000
                    ok = r.status_code == 200
                    js = r.json() if ok else None
                except Exception as e:  # noqa: BLE001 - counted as an error
                    dt, ok, js, r = (time.perf_counter() - t0) * 1000, False, None, e
                with lock:
                    if ok:
                        lat_ms.append(dt)
                        server_ms.append(js["elapsed_ms"])
                        batch.append(js.get("timing_ms", {}).get("batch_size", 1))
                    else:
                        errors += 1
                        if len(err_samples) < 3:
                            err_samples.append(str(getattr(r, "text", r))[:200])

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as ex:
        for f in [ex.submit(client) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - t0
    a = np.asarray(lat_ms) if lat_ms else np.full(1, np.nan)
    return {"concurrency": concurrency, "requests": n, "ok": len(lat_ms), "errors": errors,
            "error_samples": err_samples, "wall_s": round(wall, 3), "rps": round(len(lat_ms) / wall, 2),
            "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "mean_ms": round(float(a.mean()), 1),
            "server_p50_ms": round(float(np.median(server_ms)), 1) if server_ms else None,
            "mean_batch": round(float(np.mean(batch)), 2) if batch else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="mean,regression,retrieval")
    ap.add_argument("--requests", type=int, default=120, help="requests per (method, concurrency); bounded")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--size", default="320x240", help="query JPEG size WxH (default 320x240)")
    ap.add_argument("--preset", default="small", help="synth preset (campus layout) when synth exists")
    ap.add_argument("--photos", type=int, default=400, help="synth mapping photos (bounded for 2 CPUs)")
    ap.add_argument("--queries", type=int, default=40, help="synth query photos")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "serve")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    ap.add_argument("--serve-args", default="", help="extra flags for `campusgps serve`, e.g. '--workers 2'")
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= 5000:
        ap.error("--requests must be within 1..5000 (bounded load)")
    size = tuple(int(x) for x in args.size.lower().split("x"))
    conc = [int(c) for c in args.concurrency.split(",")]
    if any(not 1 <= c <= 64 for c in conc):
        ap.error("--concurrency values must be within 1..64")
    args.work.mkdir(parents=True, exist_ok=True)

    ds, qpaths, data_desc = prepare_data(args.work, args.preset, args.seed, args.photos, args.queries)
    bodies = encode_queries(qpaths, size)
    print(f"data: {data_desc}; {len(bodies)} distinct query JPEGs at {size[0]}x{size[1]}, "
          f"~{np.mean([len(b) for b in bodies]) / 1024:.0f} KB each", file=sys.stderr)

    rows, failures = [], {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        model = args.work / f"model_{method}_{Path(ds.root).name}.cgps"  # per dataset: never a stale model
        t0 = time.time()
        err = train(ds.root, method, model)
        if err:
            failures[method] = f"training failed: {err}"
            print(f"{method}: {failures[method]}", file=sys.stderr)
            continue
        print(f"{method}: model ready ({time.time() - t0:.0f} s)", file=sys.stderr)
        try:
            proc, url = start_server(model, args.serve_args.split())
        except RuntimeError as e:
            failures[method] = f"server failed: {e}"
            continue
        try:
            load(url, bodies, min(10, args.requests), 1)  # warm-up (lazy init, caches)
            for c in conc:
                r = load(url, bodies, args.requests, c)
                r["method"] = method
                rows.append(r)
                print(f"{method} c={c}: {r['rps']} req/s p50 {r['p50_ms']} ms", file=sys.stderr)
        finally:
            stop_server(proc)

    hdr = f"{'method':<11}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'server p50':>12}{'batch':>7}{'errors':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['method']:<11}{r['concurrency']:>8}{r['rps']:>9.1f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
              f"{(r['server_p50_ms'] or float('nan')):>12.1f}{(r['mean_batch'] or 0):>7.2f}{r['errors']:>8}")
    for m, e in failures.items():
        print(f"{m}: {e}")
    reg1 = [r for r in rows if r["method"] == "regression" and r["concurrency"] == 1]
    target = None
    if reg1:
        target = {"p50_ms": reg1[0]["p50_ms"], "target_ms": 150, "met": reg1[0]["p50_ms"] <= 150}
        print(f"target: regression p50 single client {reg1[0]['p50_ms']} ms (<= 150 ms: "
              f"{'met' if target['met'] else 'NOT met'})")
    try:
        load_avg = os.getloadavg()
    except OSError:
        load_avg = None
    result = {"data": data_desc, "query_size": list(size), "requests_per_run": args.requests,
              "rows": rows, "failures": failures, "regression_target": target,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_end": load_avg,
                          "note": "client and server share this machine's CPUs (loopback)"},
              "command": "benchmarks/serve.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0 if rows and not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
