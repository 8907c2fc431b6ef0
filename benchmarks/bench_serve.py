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

Hostile rows (``--only hostile`` runs just these): one server with a memory budget, and for
each attack a well-behaved client (127.0.0.1) sending small JPEGs, a prober timing ``GET
/health`` every 0.2 s and a sampler of the resident memory of the server and its worker
processes:

* **bomb**: 81 MP PNGs of 80 KB (refused from the header) and images just under
  ``--max-pixels`` that do decode (admitted within the memory budget, the rest wait or 503);
* **huge erode**: ``erode=10^9`` (422), and ``feather`` as large as the image allows (valid,
  minutes of work: killed at ``--timeout``);
* **64 slow clients**: 64 connections from another address (127.0.0.2) trickling one byte every
  few seconds (the per-client limit refuses all but 8 at once with 429, the upload deadline
  ends those with 408).

A row passes when ``/health`` always answered within 1 s, the memory growth stayed under the
budget and every well-behaved request got 200 (exit status 1 otherwise).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
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


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (the worker processes share the forkserver's
    imports) counted once across processes, so the sum over a process tree is meaningful."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return rss_mb(pid)


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants (the forkserver and the worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_pss_mb(pids: list[int]) -> float:
    """Memory of the processes as PSS (shared pages counted once)."""
    total = 0.0
    for p in pids:
        try:
            total += pss_mb(p)
        except OSError:
            pass
    return total


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


def png_bomb(side: int) -> bytes:
    """A valid grayscale PNG of side x side zeros (a few KB per 10 MP)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\0" * ((side + 1) * side), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


class Watch:
    """Good client, /health prober and memory sampler running beside an attack."""

    def __init__(self, server: Server, image: bytes) -> None:
        self.server, self.image = server, image
        self.stop = threading.Event()
        self.health: list[float] = []
        self.health_failures = 0
        self.good: dict[int, int] = {}
        self.memory: list[float] = []
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._client, self._prober, self._sampler)]

    def _client(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=300) as c:
            while not self.stop.is_set():
                r = c.post("/api/remove", files={"file": ("good.jpg", self.image)})
                self.good[r.status_code] = self.good.get(r.status_code, 0) + 1
                time.sleep(0.2)

    def _prober(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as c:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    ok = c.get("/health").status_code == 200
                except httpx.TransportError:
                    ok = False
                self.health.append(time.perf_counter() - start)
                self.health_failures += not ok
                time.sleep(0.2)

    def _sampler(self) -> None:  # the process list is refreshed every second only (cheap)
        pids, listed = [], 0.0
        while not self.stop.is_set():
            if time.monotonic() - listed > 1.0:
                pids, listed = descendants(self.server.proc.pid), time.monotonic()
            self.memory.append(tree_pss_mb(pids))
            time.sleep(0.1)

    def __enter__(self) -> Watch:
        self.baseline = tree_pss_mb(descendants(self.server.proc.pid))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1.0)  # the good client and the prober see the aftermath too
        self.stop.set()
        for t in self.threads:
            t.join(300)


def _attack_posts(url: str, items: list[tuple[bytes, dict]], statuses: dict) -> None:
    def one(data: bytes, form: dict) -> None:
        with httpx.Client(base_url=url, timeout=600,
                          transport=httpx.HTTPTransport(local_address="127.0.0.2")) as c:
            r = c.post("/api/remove", files={"file": ("x.png", data)}, data=form)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    threads = [threading.Thread(target=one, args=item) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _slow_clients(port: int, count: int, interval: float, duration: float,
                  statuses: dict) -> None:
    def one() -> None:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=duration + 60,
                                         source_address=("127.0.0.2", 0))
        except OSError:
            statuses["connect failed"] = statuses.get("connect failed", 0) + 1
            return
        try:
            s.sendall(b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; "
                      b"name=\"file\"; filename=\"slow.png\"\r\n\r\n")
            end = time.monotonic() + duration
            s.setblocking(False)
            reply = b""
            while time.monotonic() < end and not reply:
                try:
                    s.send(b"x")
                except OSError:
                    break
                wake = time.monotonic() + interval
                while time.monotonic() < wake and not reply:
                    try:
                        reply = s.recv(200)
                        if not reply:
                            reply = b"closed"
                    except BlockingIOError:
                        time.sleep(0.1)
                    except OSError:
                        reply = b"reset"
            status = reply.split(b" ")[1].decode() if reply.startswith(b"HTTP/") else \
                (reply.decode() or "still uploading")
            statuses[status] = statuses.get(status, 0) + 1
        finally:
            s.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def hostile(args: argparse.Namespace, image: bytes) -> list[dict]:
    budget_mb = args.max_memory_mb
    extra = ["--max-memory", f"{budget_mb}M", "--max-pixels", str(args.max_pixels),
             "--timeout", str(args.timeout), "--upload-timeout", str(args.upload_timeout),
             "--workers", "3", "--max-batch", "4"]
    server = Server(extra, 128, args.threads)
    rows = []
    try:
        near = int(args.max_pixels ** 0.5) - 1
        bomb, under, square = png_bomb(9000), png_bomb(near), png_bomb(1500)
        attacks = [
            ("bomb: 4x 81 MP PNG + 2x %.0f MP PNG" % (near * near / 1e6),
             lambda st: _attack_posts(server.url, [(bomb, {})] * 4
                                      + [(under, {"output": "cutout"})] * 2, st)),
            ("huge erode: 4x erode=1e9, 2x feather=1500",
             lambda st: _attack_posts(server.url, [(image, {"erode": str(10**9)})] * 4
                                      + [(square, {"feather": "1500"})] * 2, st)),
            (f"64 slow clients (1 byte / {args.slow_interval:g} s)",
             lambda st: _slow_clients(int(server.url.rsplit(":", 1)[1]), 64, args.slow_interval,
                                      args.upload_timeout + 10, st)),
        ]
        load(server.url, [image], 4, 2, lambda: None)  # warm-up: the worker processes exist
        for label, attack in attacks:
            statuses: dict = {}
            with Watch(server, image) as watch:
                attack(statuses)
            growth = max(watch.memory) - watch.baseline
            peak = httpx.get(server.url + "/health", timeout=30).json()["memory"]["peak_reserved"]
            rows.append(dict(label=label, attack=statuses, good=watch.good, peak=peak / 2**20,
                             health_max=max(watch.health), health_failures=watch.health_failures,
                             growth=growth, budget=budget_mb,
                             ok=(max(watch.health) < 1.0 and not watch.health_failures
                                 and growth < budget_mb and set(watch.good) == {200})))
    finally:
        server.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests (under a minute)")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="torch threads of the server")
    parser.add_argument("--only", choices=("batching", "hostile"), default=None)
    parser.add_argument("--max-memory-mb", type=int, default=300,
                        help="the server's --max-memory in the hostile rows")
    parser.add_argument("--max-pixels", type=int, default=4_000_000,
                        help="the server's --max-pixels in the hostile rows")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="the server's --timeout in the hostile rows")
    parser.add_argument("--upload-timeout", type=float, default=20.0,
                        help="the server's --upload-timeout in the hostile rows")
    parser.add_argument("--slow-interval", type=float, default=5.0,
                        help="seconds between the bytes of a slow client")
    args = parser.parse_args()
    total = args.requests or (120 if args.quick else 400)
    size = args.input_size or (128 if args.quick else 320)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp), 16, (320, 240))
        if args.only != "batching":
            rows = hostile(args, images[0])
            print(f"salseg-serve hostile rows: --max-memory {args.max_memory_mb}M --max-pixels "
                  f"{args.max_pixels} --timeout {args.timeout:g} --upload-timeout "
                  f"{args.upload_timeout:g} --workers 3; U2-NetP at 128x128")
            print(f"{'attack':<42} {'attack answers':<28} {'good client':<14} "
                  f"{'/health max':>11} {'memory growth':>16}  ok")
            for r in rows:
                attack = ", ".join(f"{k}: {v}" for k, v in sorted(r["attack"].items(),
                                                                  key=str))
                good = ", ".join(f"{k}: {v}" for k, v in sorted(r["good"].items()))
                print(f"{r['label']:<42} {attack:<28} {good:<14} "
                      f"{r['health_max'] * 1000:>8.0f} ms "
                      f"{r['growth']:>6.0f} / {r['budget']} MB  {'yes' if r['ok'] else 'NO'}")
                failed += not r["ok"]
            print("peak memory reserved by admission so far, after each row (MiB): "
                  + ", ".join(f"{r['peak']:.0f}" for r in rows))
            if args.only == "hostile":
                return 1 if failed else 0
        rows = [run("batching off (max-batch 1)", ["--max-batch", "1"], images, total,
                    args.clients, size, args.threads),
                run("batching on (max-batch 8, 10 ms)", ["--max-batch", "8", "--max-wait-ms", "10"],
                    images, total, args.clients, size, args.threads)]
    print(f"salseg-serve load test: {total} requests, {args.clients} clients, U2-NetP at "
          f"{size}x{size}, 320x240 JPEGs, CPU ({args.threads} torch threads)")
    print(f"{'setting':<34} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'max batch':>9} "
          f"{'failed':>6}  memory MB (warm, quarters, end)")
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
