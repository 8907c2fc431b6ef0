"""Load test of ``salseg-serve`` on loopback: batching on vs off.

A server process (``python -m salseg.cli.serve``, U2-NetP with random weights: speed does not
depend on them) is started on 127.0.0.1 with ``--max-batch 1`` (batching off), then with
``--max-batch 8 --max-wait-ms 10`` (on).  Several concurrent clients send a fixed number of
rembg-style ``POST /api/remove`` requests (synthetic JPEGs, cut-out answers) and stop.  For
each setting it prints throughput, p50/p95 latency, the largest batch the server formed, failed
requests (any is an error: exit status 1) and the server's resident memory after a concurrent
warm-up and at each quarter of the run (flat = no growth with the number of requests).
``benchmarks/run_all.py`` runs it with the other ``bench_*.py`` scripts.

Prints ``RATIO serve_batching_throughput x`` = requests/s with batching / without.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from salseg.data.synthetic import SyntheticSpec, render_pair  # noqa: E402


def make_images(folder: Path, count: int, size: tuple[int, int]) -> list[bytes]:
    spec = SyntheticSpec(size=size)
    out = []
    for i in range(count):
        image, _ = render_pair(spec, "val", i)
        path = folder / f"img{i}.jpg"
        Image.fromarray(image).save(path, quality=90)
        out.append(path.read_bytes())
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, extra: list[str], input_size: int, threads: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "salseg.cli.serve", "--random-weights", "--model", "u2netp",
               "--device", "cpu", "--input-size", str(input_size), "--port", "0",
               "--max-queue", "256", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line.startswith("salseg-serve: http://"):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.url = line.split()[1].rstrip("/")
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(self.url + "/health", timeout=5)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def load(url: str, images: list[bytes], total: int, clients: int, on_quarter) -> dict:  # noqa: ANN001
    latencies: list[float] = []
    failures: list[str] = []
    counter = iter(range(total))
    lock = threading.Lock()
    quarters = {total * q // 4 for q in (1, 2, 3)}

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                r = c.post("/api/remove", files={"file": (f"{i}.jpg", images[i % len(images)])})
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:120]}")
                    if len(latencies) in quarters:
                        on_quarter()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"throughput": total / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "failures": failures, "wall": wall}


def run(label: str, extra: list[str], images: list[bytes], total: int, clients: int,
        input_size: int, threads: int) -> dict:
    server = Server(extra, input_size, threads)
    try:
        load(server.url, images, 2 * clients, clients, lambda: None)  # warm-up, full batches
        memory = [rss_mb(server.proc.pid)]
        result = load(server.url, images, total, clients,
                      lambda: memory.append(rss_mb(server.proc.pid)))
        memory.append(rss_mb(server.proc.pid))
        health = httpx.get(server.url + "/health", timeout=30).json()
    finally:
        server.stop()
    stats = next(iter(health["models"].values()))
    result.update(label=label, memory=memory, largest_batch=stats["largest_batch"],
                  batches=stats["batches"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests (under a minute)")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="torch threads of the server")
    args = parser.parse_args()
    total = args.requests or (120 if args.quick else 400)
    size = args.input_size or (128 if args.quick else 320)
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp), 16, (320, 240))
        rows = [run("batching off (max-batch 1)", ["--max-batch", "1"], images, total,
                    args.clients, size, args.threads),
                run("batching on (max-batch 8, 10 ms)", ["--max-batch", "8", "--max-wait-ms", "10"],
                    images, total, args.clients, size, args.threads)]
    print(f"salseg-serve load test: {total} requests, {args.clients} clients, U2-NetP at "
          f"{size}x{size}, 320x240 JPEGs, CPU ({args.threads} torch threads)")
    print(f"{'setting':<34} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'max batch':>9} "
          f"{'failed':>6}  memory MB (warm, quarters, end)")
    failed = 0
    for r in rows:
        failed += len(r["failures"])
        mem = ", ".join(f"{m:.0f}" for m in r["memory"])
        print(f"{r['label']:<34} {r['throughput']:>7.2f} {r['p50'] * 1000:>8.0f} "
              f"{r['p95'] * 1000:>8.0f} {r['largest_batch']:>9} {len(r['failures']):>6}  {mem}")
        for f in r["failures"][:5]:
            print(f"  FAILED {f}")
    growth = max(r["memory"][-1] - r["memory"][0] for r in rows)
    print(f"largest memory growth during a run: {growth:.0f} MB")
    print(f"RATIO serve_batching_throughput {rows[1]['throughput'] / rows[0]['throughput']:.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
