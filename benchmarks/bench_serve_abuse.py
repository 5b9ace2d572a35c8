"""Soak test of ``mfclip serve`` under an adversarial corpus, with well-formed requests sent alongside.

Starts ``mfclip serve`` (uvicorn on 127.0.0.1, a free port, the default limits) in a subprocess. First an
**idle** phase: one client sends ``--requests`` well-formed requests (a 256 px PNG photo each) one after
another, for the reference p50 / p99 latency and the idle RSS of the server. Then the **abuse** phase:
``--abusers`` concurrent clients replay the adversarial corpus ``--rounds`` times (16-bit grey and palette
images near the pixel limit, RGBA and JPEG images near the decoded-size limit, decompression bombs,
truncated files, 32 files per request, bodies sent slowly and stalled, connections that never finish
their headers) while the same well-formed client runs again. The server's RSS is sampled every 20 ms.

Reported: requests per corpus entry by status code, p50 / p99 of the well-formed requests idle and under
abuse, idle and peak RSS. Goals: peak RSS under 2x the idle RSS, well-formed p99 under abuse within 2x
of the idle p99.

    python benchmarks/bench_serve_abuse.py            # mfclip-tiny, 4 abusers x 3 rounds
    python benchmarks/bench_serve_abuse.py --quick    # 2 abusers x 1 round (smoke run)

Writes docs/benchmarks/serve_abuse.md and serve_abuse.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from bench_serve import free_port, start_serve_process
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.utils.io import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "mfclipabuse"


# ----------------------------------------------------------------------------------------------------
# The corpus


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG declaring ``width`` x ``height`` RGB pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(100)))
        + chunk(b"IEND", b"")
    )


def sparse(side: int, dtype: type, value: int) -> np.ndarray:
    values = np.zeros((side, side), dtype=dtype)
    values[::7, ::5] = value
    return values


def photo_png(index: int, size: int = 256) -> bytes:
    photo = skdata.astronaut()
    top, left = (index * 23) % 256, (index * 41) % 256
    return encode(Image.fromarray(np.ascontiguousarray(photo[top : top + size, left : left + size])))


def build_corpus() -> dict[str, list[tuple[str, bytes]]]:
    """Corpus entry -> the files of one request."""
    grey16 = encode(Image.fromarray(sparse(6300, np.uint16, 40000)))
    palette = Image.fromarray(sparse(6300, np.uint8, 200)).convert("P")
    rgba = Image.new("RGBA", (6000, 6000), (10, 20, 30, 128))
    noise = np.random.default_rng(0).integers(0, 256, (3000, 2000, 3), dtype=np.uint8)
    big_jpeg = encode(Image.fromarray(np.tile(noise, (2, 3, 1))), "JPEG", quality=70)  # 6000 x 6000
    small = photo_png(0, 64)
    return {
        "16-bit grey 6300x6300 x8": [(f"g{i}.png", grey16) for i in range(8)],
        "palette 6300x6300 x4": [(f"p{i}.png", encode(palette)) for i in range(4)],
        "RGBA 6000x6000": [("rgba.png", encode(rgba))],
        "JPEG 6000x6000": [("big.jpg", big_jpeg)],
        "bomb header 10000x10000": [("bomb.png", png_header(10000, 10000))],
        "bomb header 15000x15000": [("bomb.png", png_header(15000, 15000))],
        "bomb 6400x6400 zeros": [("zeros.png", encode(Image.new("L", (6400, 6400))))],
        "truncated PNG + JPEG": [("cut.png", grey16[: len(grey16) // 2]), ("cut.jpg", big_jpeg[:5000])],
        "32 files per request": [(f"s{i}.png", small) for i in range(32)],
    }


def multipart(files: list[tuple[str, bytes]]) -> bytes:
    parts = []
    for name, data in files:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


# ----------------------------------------------------------------------------------------------------
# The server and its memory


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """The peak RSS of a process, sampled every ``interval_s`` on a thread while in the ``with`` block."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------------------------
# The load


async def well_formed(
    http: httpx.AsyncClient, bodies: list[bytes], count: int, stop: Callable[[], bool], statuses: Counter
) -> list[float]:
    """Latencies (ms) of the 200 answers to ``count`` sequential well-formed requests (fewer if ``stop``
    says so first); every answer's status is counted in ``statuses``."""
    latencies: list[float] = []
    for index in range(count):
        if stop():
            break
        files = {"file": (f"{index}.png", bodies[index % len(bodies)], "image/png")}
        start = time.perf_counter()
        response = await http.post("/v1/detect", files=files)
        statuses[str(response.status_code)] += 1
        if response.status_code == 200:
            latencies.append((time.perf_counter() - start) * 1000.0)
    return latencies


async def slow_body(port: int, timeout_s: float) -> int:
    """A request whose body arrives 1 KB every 0.5 s and then stalls: the status the server answers."""
    body = multipart([("slow.png", photo_png(1))])
    head = (
        "POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        for offset in range(0, 8 * 1024, 1024):
            writer.write(body[offset : offset + 1024])
            await writer.drain()
            await asyncio.sleep(0.5)
        answer = await asyncio.wait_for(reader.read(), timeout=timeout_s + 30)  # the rest never comes
    except (asyncio.TimeoutError, ConnectionError):
        answer = b""
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else -1


async def unfinished_headers(port: int, wait_s: float) -> int:
    """A connection that sends half a request head and waits: the status the server closes it with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-")
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=wait_s)
    except asyncio.TimeoutError:
        answer = b""
    writer.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else -1


async def abuse(
    url: str,
    port: int,
    corpus: dict[str, list[tuple[str, bytes]]],
    abusers: int,
    rounds: int,
    timeout_s: float,
) -> dict[str, Counter]:
    statuses: dict[str, Counter] = defaultdict(Counter)
    bodies = {name: multipart(files) for name, files in corpus.items()}
    work: list[str] = [name for _ in range(rounds) for name in bodies] + ["slow body"] * rounds
    work += ["unfinished headers"] * (rounds * 4)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    async def abuser() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s + 60) as http:
            while not queue.empty():
                name = queue.get_nowait()
                if name == "slow body":
                    status = await slow_body(port, timeout_s)
                elif name == "unfinished headers":
                    status = await unfinished_headers(port, 40.0)
                else:
                    try:
                        response = await http.post("/v1/detect", content=bodies[name], headers=headers)
                        status = response.status_code
                        if status == 200:
                            for result in response.json()["results"]:
                                statuses[name][f"file {result['status']}"] += 1
                    except httpx.HTTPError:
                        status = -1
                statuses[name][str(status)] += 1

    await asyncio.gather(*(abuser() for _ in range(abusers)))
    return statuses


def percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies)
    return {
        "requests": len(latencies),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


async def run(url: str, port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    bodies = [photo_png(i) for i in range(16)]
    corpus = build_corpus()
    idle_statuses: Counter = Counter()
    abuse_statuses: Counter = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=600.0) as http:
        await well_formed(http, bodies, 5, lambda: False, Counter())  # warm-up
        idle_rss = rss_mib(pid)
        idle = await well_formed(http, bodies, args.requests, lambda: False, idle_statuses)
        with RssSampler(pid) as sampler:
            abusive = asyncio.ensure_future(abuse(url, port, corpus, args.abusers, args.rounds, args.timeout))
            await asyncio.sleep(0.5)  # let the abuse start
            loaded = await well_formed(http, bodies, 10**9, abusive.done, abuse_statuses)
            statuses = await abusive
        after_rss = rss_mib(pid)
    return {
        "idle": {**percentiles(idle), "statuses": dict(idle_statuses)},
        "abuse": {**percentiles(loaded), "statuses": dict(abuse_statuses)},
        "statuses": {name: dict(counts) for name, counts in statuses.items()},
        "idle_rss_mib": idle_rss,
        "peak_rss_mib": max(sampler.peak, after_rss),
        "after_rss_mib": after_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 abusers x 1 round, 20 requests (smoke run)")
    parser.add_argument("--model", default="mfclip-tiny", help="model preset (default mfclip-tiny)")
    parser.add_argument(
        "--abusers", type=int, default=None, help="concurrent abusive clients (default 4; quick 2)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="replays of the corpus (default 3; quick 1)")
    parser.add_argument(
        "--requests", type=int, default=None, help="well-formed requests idle (default 200; quick 20)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="the server's --timeout (default 10 s)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    args.abusers = args.abusers or (2 if args.quick else 4)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.requests = args.requests or (20 if args.quick else 200)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mfclip-bench-abuse-") as tmp:
        checkpoint = save_checkpoint(
            create_model(args.model), Path(tmp) / "checkpoint", {"name": f"{args.model} (random)"}
        )
        port = free_port()
        server = start_serve_process(
            checkpoint, port, ["--timeout", str(args.timeout), "--log-level", "error"]
        )
        try:
            started = time.perf_counter()
            result = asyncio.run(run(f"http://127.0.0.1:{port}", port, server.pid, args))
            result["wall_s"] = time.perf_counter() - started
            result["alive"] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        finally:
            server.terminate()
            try:
                _, errors = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                _, errors = server.communicate()
    result["bomb_warnings"] = errors.count("DecompressionBombWarning")
    info = {"model": args.model, "abusers": args.abusers, "rounds": args.rounds, "requests": args.requests}
    info.update(timeout_s=args.timeout, quick=args.quick, command=" ".join(["python", *sys.argv]))
    write_report(result, info, args.out)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))


def write_report(result: dict[str, Any], info: dict[str, Any], out: Path) -> None:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    idle, loaded = result["idle"], result["abuse"]
    rss_ratio = result["peak_rss_mib"] / result["idle_rss_mib"]
    p99_ratio = loaded["p99_ms"] / idle["p99_ms"]
    lines = [
        "# Serving under an adversarial load (loopback, CPU)",
        "",
        f"Model `{info['model']}` (random initialisation), `mfclip serve` with its default limits and "
        f"`--timeout {info['timeout_s']:g}`; {info['abusers']} concurrent abusive clients replaying the "
        f"corpus {info['rounds']} time(s), one well-formed client (256 px PNG per request) alongside; "
        f"{machine}; torch {torch.__version__}."
        + (" Quick smoke run: not a measurement to quote." if info["quick"] else ""),
        "",
        f"Command: `{info['command']}`",
        "",
        "| corpus entry (one request) | answers (HTTP status: count; per-file statuses of 200 answers) |",
        "|---|---|",
    ]
    for name, counts in result["statuses"].items():
        lines.append(f"| {name} | {_counts(counts)} |")
    lines += [
        "",
        "(-1: closed without an answer, or still open when the client gave up.)",
        "",
        "| well-formed requests | answers | p50 of 200s (ms) | p99 of 200s (ms) |",
        "|---|---|---:|---:|",
        f"| idle server | {_counts(idle['statuses'])} | {idle['p50_ms']:.0f} | {idle['p99_ms']:.0f} |",
        f"| under abuse | {_counts(loaded['statuses'])} | {loaded['p50_ms']:.0f} | {loaded['p99_ms']:.0f} |",
        "",
        f"Server RSS: idle {result['idle_rss_mib']:.0f} MiB, peak under abuse "
        f"{result['peak_rss_mib']:.0f} MiB (**{rss_ratio:.2f}x** idle; goal < 2x), "
        f"{result['after_rss_mib']:.0f} MiB after. Well-formed p99 under abuse / idle: "
        f"**{p99_ratio:.2f}x** (goal <= 2x). Still serving afterwards: {result['alive']}. Pillow "
        f"DecompressionBombWarnings printed by the server: {result['bomb_warnings']}. "
        f"Wall time {result['wall_s']:.0f} s.",
        "",
        "Regenerate: `python benchmarks/bench_serve_abuse.py` (`--quick` for a smoke run).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(out / "serve_abuse.md", text)
    atomic_write_json(out / "serve_abuse.json", {"info": {**info, "machine": machine}, "result": result})


if __name__ == "__main__":
    main()
