"""HTTP serving under concurrent load: request batching on vs off, side by side in one run.

Starts ``mfclip serve`` (uvicorn on 127.0.0.1, a free port) in a subprocess for each mode, waits for
``/healthz``, then runs a bounded load: ``--clients`` concurrent httpx clients, each sending
``--requests`` POST /v1/detect requests one after another (a 256 px PNG photo each). The load stops
by itself. Reported per mode: throughput (requests/s over the whole load), p50 / p90 / p99 latency and
errors. The reference is the same server with ``--no-batching`` (every request its own forward pass).

    python benchmarks/bench_serve.py            # mfclip-vit-b16 (random init), 16 clients x 8 requests
    python benchmarks/bench_serve.py --quick    # mfclip-tiny, 8 clients x 4 requests (smoke run)

Writes docs/benchmarks/serve.md and serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.utils.io import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request_bodies(count: int) -> list[bytes]:
    photo = skdata.astronaut()
    bodies = []
    for i in range(count):
        crop = np.ascontiguousarray(photo[(i * 23) % 256 :][:256, (i * 41) % 256 :][:, :256])
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, format="PNG")
        bodies.append(buffer.getvalue())
    return bodies


def start_server(checkpoint: Path, port: int, batching: bool, args: argparse.Namespace) -> subprocess.Popen:
    options = ["--batching" if batching else "--no-batching", "--batch-max-size", str(args.batch_max_size)]
    options += [
        "--batch-max-wait-ms",
        str(args.batch_max_wait_ms),
        "--timeout",
        "600",
        "--log-level",
        "warning",
    ]
    return start_serve_process(checkpoint, port, options)


def start_serve_process(checkpoint: Path, port: int, options: list[str]) -> subprocess.Popen:
    """``mfclip serve`` on 127.0.0.1:``port`` (CPU) with ``options``, once ``/healthz`` answers."""
    command = [sys.executable, "-m", "mfclip.cli.main", "serve", "--checkpoint", str(checkpoint)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("server did not become healthy within 120 s")


async def run_load(url: str, bodies: list[bytes], clients: int, requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600.0, limits=limits) as http:

        async def client(index: int) -> None:
            nonlocal errors
            for r in range(requests):
                body = bodies[(index * requests + r) % len(bodies)]
                start = time.perf_counter()
                response = await http.post(
                    "/v1/detect", files={"file": (f"{index}-{r}.png", body, "image/png")}
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors += 1

        # Warm-up request outside the measurement.
        await http.post("/v1/detect", files={"file": ("warm.png", bodies[0], "image/png")})
        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - start
    values = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="mfclip-tiny, light load (smoke run)")
    parser.add_argument(
        "--model", default=None, help="model preset (default mfclip-vit-b16; quick: mfclip-tiny)"
    )
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (default 16; quick 8)")
    parser.add_argument("--requests", type=int, default=None, help="requests per client (default 8; quick 4)")
    parser.add_argument("--batch-max-size", type=int, default=16)
    parser.add_argument("--batch-max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    preset = args.model or ("mfclip-tiny" if args.quick else "mfclip-vit-b16")
    clients = args.clients or (8 if args.quick else 16)
    requests = args.requests or (4 if args.quick else 8)
    bodies = request_bodies(32)
    torch.manual_seed(0)

    results = []
    with tempfile.TemporaryDirectory(prefix="mfclip-bench-serve-") as tmp:
        checkpoint = save_checkpoint(
            create_model(preset), Path(tmp) / "checkpoint", {"name": f"{preset} (random)"}
        )
        for batching in (False, True):
            port = free_port()
            server = start_server(checkpoint, port, batching, args)
            try:
                stats = asyncio.run(run_load(f"http://127.0.0.1:{port}", bodies, clients, requests))
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
            mode = "batching on (ours)" if batching else "batching off (reference)"
            results.append({"mode": mode, **stats})
            print(f"{mode}: {stats}", file=sys.stderr)

    info = {"preset": preset, "clients": clients, "requests_per_client": requests, "quick": args.quick}
    info.update(batch_max_size=args.batch_max_size, batch_max_wait_ms=args.batch_max_wait_ms)
    write_report(results, info, args.out)


def write_report(results: list[dict[str, Any]], info: dict[str, Any], out: Path) -> None:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    lines = [
        "# Serving under concurrent load (loopback, CPU)",
        "",
        f"Model `{info['preset']}` (random initialisation); {info['clients']} concurrent clients x "
        f"{info['requests_per_client']} requests, one 256 px PNG per POST /v1/detect; batching: at most "
        f"{info['batch_max_size']} images, {info['batch_max_wait_ms']:g} ms wait; {machine}; torch "
        f"{torch.__version__}." + (" Quick smoke run: not a measurement to quote." if info["quick"] else ""),
        "",
        "| mode | requests | errors | throughput (req/s) | p50 (ms) | p90 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.1f} | "
            f"{r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['p99_ms']:.0f} |"
        )
    speedup = results[-1]["throughput_rps"] / results[0]["throughput_rps"]
    lines += [
        "",
        f"Throughput with batching / without: {speedup:.2f}x. Latency is per request, client side, "
        "including upload, decoding and JSON.",
        "",
        "Regenerate: `python benchmarks/bench_serve.py` (`--quick` for a smoke run).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(out / "serve.md", text)
    atomic_write_json(out / "serve.json", {"info": {**info, "machine": machine}, "results": results})


if __name__ == "__main__":
    main()
