"""Load benchmark of `salicon serve`: N concurrent API clients on loopback.

Starts a server (the shipped model unless --model/--prototxt/--fast say
otherwise), lets N clients POST images to /api/saliency for T seconds (no new
request after T; the ones in flight finish), and reports requests/s, latency
percentiles, the server's resident memory (peak, and the first and last
quarter of the run, to show whether it grows) and failed requests. With
--bad-every K, every K-th request of a client is a text file named .jpg,
which must be refused with 415 (counted apart, not as a failure).

--configs runs several servers one after the other in the same run:
``single`` (salicon serve), ``ray:N`` (salicon serve --ray --replicas N on a
local Ray instance; memory is then the sum over the driver and the replicas).

    python benchmarks/bench_serve.py --clients 8 --seconds 60 --json benchmarks/results/serve_2core.json
    python benchmarks/bench_serve.py --configs single,ray:1,ray:2 --json benchmarks/results/serve_ray_2core.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from machine import cpu_features

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # it exited (a replica restarting)
        return 0.0
    return float("nan")


def replica_pids() -> list[int]:
    """The Ray Serve replicas of salicon serve --ray (model replicas and the result store)."""
    lines = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [int(line.split()[0]) for line in lines if "ServeReplica:salicon:" in line]


def server_rss_mb(pid: int, ray: bool) -> float:
    return rss_mb(pid) + (sum(rss_mb(p) for p in replica_pids()) if ray else 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra: list[str], ray: bool = False) -> tuple[subprocess.Popen, str]:
    """Start salicon serve; return once it answers (on Ray: once every replica is up)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "salicon", "serve", "--port", str(port), *extra],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {''.join(lines)}")
        ready = not ray or any("Ctrl-C stops" in line for line in lines)
        try:
            if ready and httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def run(url: str, pid: int, clients: int, seconds: float, bad_every: int, ray: bool = False) -> dict:
    images = [(p.name, p.read_bytes()) for p in EXAMPLES]
    latencies: list[float] = []
    failures: list[str] = []
    refused = 0
    lock = threading.Lock()
    memory: list[tuple[float, float]] = []
    stop_sampling = threading.Event()
    start = time.perf_counter()
    end = start + seconds

    def sample():
        while not stop_sampling.is_set():
            memory.append((time.perf_counter() - start, server_rss_mb(pid, ray)))
            stop_sampling.wait(0.25)

    def client(index: int):
        nonlocal refused
        n = 0
        with httpx.Client(base_url=url, timeout=900) as c:
            while time.perf_counter() < end:
                n += 1
                bad = bad_every and n % bad_every == 0
                name, data = ("notes.jpg", b"not an image\n") if bad else images[(index + n) % len(images)]
                t0 = time.perf_counter()
                try:
                    r = c.post("/api/saliency", params={"format": "png"},
                               files={"file": (name, data, "image/jpeg")})
                    status = r.status_code
                except httpx.HTTPError as exc:
                    status, r = None, exc
                elapsed = time.perf_counter() - t0
                with lock:
                    if bad and status == 415:
                        refused += 1
                    elif not bad and status == 200:
                        latencies.append(elapsed)
                    else:
                        failures.append(f"{name}: {status} {getattr(r, 'text', r)}"[:200])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    stop_sampling.set()
    sampler.join()
    rss = [m for _, m in memory]
    quarter = max(1, len(rss) // 4)
    return {
        "clients": clients, "seconds": seconds, "wall_s": round(wall, 1),
        "requests_ok": len(latencies), "refused_as_expected": refused, "failed": len(failures),
        "failures": failures[:10],
        "requests_per_s": round(len(latencies) / wall, 3),
        "latency_s": {"p50": round(percentile(latencies, 50), 2), "p99": round(percentile(latencies, 99), 2),
                      "min": round(min(latencies), 2) if latencies else None,
                      "max": round(max(latencies), 2) if latencies else None},
        "server_rss_mb": {"peak": round(max(rss), 1), "first_quarter_mean": round(statistics.mean(rss[:quarter]), 1),
                          "last_quarter_mean": round(statistics.mean(rss[-quarter:]), 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="no new request after this")
    parser.add_argument("--bad-every", type=int, default=0, help="every K-th request is a non-image (0: none)")
    parser.add_argument("--fast", action="store_true", help="serve the half-size net (salicon serve --fast)")
    parser.add_argument("--serve-args", default="", help="more arguments for salicon serve")
    parser.add_argument("--configs", default="single",
                        help="servers to load, one after the other: single, ray:N (comma-separated)")
    parser.add_argument("--json", help="append the result to this JSON file (a list of runs)")
    args = parser.parse_args()

    extra = (["--fast"] if args.fast else []) + args.serve_args.split()
    ok = True
    for config in args.configs.split(","):
        result = measure(config.strip(), extra, args)
        print(json.dumps(result, indent=2))
        if args.json:
            path = Path(args.json)
            runs = json.loads(path.read_text()) if path.exists() else []
            runs.append(result)
            path.write_text(json.dumps(runs, indent=2) + "\n")
        ok = ok and not result["failed"] and result["server_alive_after"]
    if not ok:
        sys.exit(1)


def measure(config: str, extra: list[str], args: argparse.Namespace) -> dict:
    """One server of ``config`` (single or ray:N) under the load the arguments describe."""
    ray = config.startswith("ray:")
    if ray:
        extra = [*extra, "--ray", "--replicas", config.split(":", 1)[1]]
    elif config != "single":
        raise SystemExit(f"--configs: unknown server {config!r} (single or ray:N)")
    started = time.perf_counter()
    proc, url = start_server(extra, ray)
    start_s = time.perf_counter() - started
    try:
        health = httpx.get(f"{url}/api/health").json()
        httpx.post(f"{url}/api/saliency", files={"file": (EXAMPLES[0].name, EXAMPLES[0].read_bytes())},
                   timeout=900)  # warm-up, not counted
        idle_rss = server_rss_mb(proc.pid, ray)
        result = run(url, proc.pid, args.clients, args.seconds, args.bad_every, ray)
        alive = proc.poll() is None and httpx.get(f"{url}/api/health").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    result.update({
        "server": config, "start_s": round(start_s, 1),
        "server_rss_mb_after_warmup": round(idle_rss, 1), "server_alive_after": alive,
        "net": health["input_sizes"], "device": health["device"], "model": health["model"],
        "precision": health.get("precision"), "runtime": health.get("runtime"),
        "bad_every": args.bad_every,
        "machine": {**cpu_features(), "cores": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join(["python", "benchmarks/bench_serve.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
    })
    return result


if __name__ == "__main__":
    main()
