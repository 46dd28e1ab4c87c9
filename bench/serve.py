"""What ``ds4router serve`` adds to a request, and how many it carries: one JSON object.

The fake cloud (``tests/ds4router/openai_server.py``, a loopback OpenAI-compatible server)
answers every request with a short stream. The gateway runs as a real ``ds4router serve``
subprocess in front of it, with its own database, routing every request to that cloud
model (classified, routed, priced, recorded: the whole pipeline).

* ``overhead_p50_ms`` / ``overhead_p99_ms``: the same streamed request, one at a time, through
  the gateway minus straight to the fake cloud (percentiles of each series, then the
  difference), so the fake cloud's own time cancels out.
* ``requests_per_s``: ``--clients`` (32) concurrent streaming clients through the gateway.

Usage: ``python bench/serve.py [--requests 200] [--clients 32] [--rounds 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "ds4router"))

from openai_server import OpenAIServer, ok  # noqa: E402

MODEL = "openai/bench-model"
BODY = {
    "model": "ds4router/auto",
    "messages": [{"role": "user", "content": "write a haiku about caches"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stream_once(client: httpx.Client, url: str, body: dict) -> float:
    start = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for _ in response.iter_bytes():
            pass
    return (time.perf_counter() - start) * 1000


async def concurrent(url: str, clients: int, rounds: int) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> int:
            done = 0
            for _ in range(rounds):
                async with client.stream("POST", url, json=BODY) as response:
                    response.raise_for_status()
                    async for _ in response.aiter_bytes():
                        pass
                done += 1
            return done

        start = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - start, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20, help="requests per concurrent client")
    args = parser.parse_args()

    cloud = OpenAIServer(default=ok("Quiet", " cache", " hums")).start()
    home = Path(tempfile.mkdtemp(prefix="ds4-bench-serve-"))
    project = home / "project"
    project.mkdir()
    config = {
        "project": "bench",
        "default": f"cloud:{MODEL}",
        "fallback": {"cloud_unavailable": None, "local_unavailable": None},
        "cloud": {"models": [{"name": MODEL, "api_base": cloud.base_url}], "retries": 0},
    }
    (project / ".ds4router.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {
        **os.environ,
        "DS4ROUTER_HOME": str(home / "home"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    env["PYTHONPATH"] = str(REPO)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ds4router",
            "serve",
            "--project",
            str(project),
            "--port",
            str(port),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    gateway = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get(f"{gateway}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the gateway did not start")
                time.sleep(0.1)
            direct_body = {**BODY, "model": MODEL}
            for _ in range(20):  # warm both paths (imports, LiteLLM's first call)
                stream_once(client, f"{cloud.base_url}/chat/completions", direct_body)
                stream_once(client, f"{gateway}/v1/chat/completions", BODY)
            direct, through = [], []
            for _ in range(args.requests):  # interleaved, so drift hits both alike
                direct.append(
                    stream_once(client, f"{cloud.base_url}/chat/completions", direct_body)
                )
                through.append(stream_once(client, f"{gateway}/v1/chat/completions", BODY))
        seconds, done = asyncio.run(
            concurrent(f"{gateway}/v1/chat/completions", args.clients, args.rounds)
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        cloud.stop()
    result = {
        "bench": "serve",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "requests": args.requests,
        "direct_p50_ms": round(statistics.median(direct), 3),
        "direct_p99_ms": round(percentile(direct, 0.99), 3),
        "gateway_p50_ms": round(statistics.median(through), 3),
        "gateway_p99_ms": round(percentile(through, 0.99), 3),
        "overhead_p50_ms": round(statistics.median(through) - statistics.median(direct), 3),
        "overhead_p99_ms": round(percentile(through, 0.99) - percentile(direct, 0.99), 3),
        "concurrent_clients": args.clients,
        "concurrent_requests": done,
        "requests_per_s": round(done / seconds, 1),
        "fake_cloud_requests": cloud.count,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
