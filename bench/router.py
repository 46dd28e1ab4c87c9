"""Router and detector speed: one JSON line.

decision_p50_ms / decision_p99_ms: `decide()` over 200 rules (none matching
until the last) for a request whose prompt is 100 KB; detector_mb_per_s: the
detectors scanning a 100 KB prompt of source code and prose (Python's own
standard library source, so the text is real code, not a synthetic pattern), with
every rule and detector on; scan_100kb_ms: one scan of a 100 KB unified diff of that
source (the diff view is scanned too). Targets: p99 < 2 ms, detectors >= 50 MB/s.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import statistics
import time
from pathlib import Path


def main() -> None:
    import argparse
    import textwrap

    from ds4router.config import Config, load_config
    from ds4router.routing.classify import classify
    from ds4router.routing.detectors import scan
    from ds4router.routing.request import Request
    from ds4router.routing.router import RouterState, decide

    base = load_config(cwd=Path("/")).config.model_dump(mode="json")
    rules = [
        {
            "name": f"rule-{i}",
            "when": {"task": ["batch"], "privacy": ["public"], "min_tokens": 10 + i},
            "to": "cloud:openai/gpt-4.1",
        }
        for i in range(199)
    ]
    rules.append({"name": "last", "when": {"privacy": ["internal", "confidential"]}, "to": "local"})
    config = Config.model_validate({**base, "routes": rules})

    source = inspect.getsource(argparse) + inspect.getsource(textwrap)
    prose = (
        "Please review the following module and explain the trade-offs of its design. "
        "We want to know where it could be simplified and what tests are missing.\n"
    )
    prompt = ((prose + source) * 4)[:100_000]
    request = classify(Request(prompt), config)
    state = RouterState()

    for _ in range(50):
        decide(request, config, state)
    times = []
    for _ in range(2000):
        t0 = time.perf_counter()
        decide(request, config, state)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()

    scan(prompt)
    runs = []
    for _ in range(30):
        t0 = time.perf_counter()
        scan(prompt)
        runs.append(time.perf_counter() - t0)
    mb = len(prompt.encode()) / 1e6

    import difflib

    lines = source.splitlines(keepends=True)
    changed = [line.replace("self", "this") for line in lines]
    diff_text = "".join(difflib.unified_diff(lines, changed, "a/argparse.py", "b/argparse.py"))
    diff_text = (diff_text * 4)[:100_000]
    scan(diff_text)
    diff_runs = []
    for _ in range(20):
        t0 = time.perf_counter()
        scan(diff_text)
        diff_runs.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    for _ in range(20):
        classify(Request(prompt), config)
    classify_ms = (time.perf_counter() - t0) / 20 * 1000

    print(
        json.dumps(
            {
                "decision_p50_ms": round(statistics.median(times), 4),
                "decision_p99_ms": round(times[int(len(times) * 0.99)], 4),
                "rules": len(rules),
                "prompt_bytes": len(prompt.encode()),
                "detector_mb_per_s": round(mb / statistics.median(runs), 1),
                "scan_100kb_ms": round(statistics.median(diff_runs), 2),
                "classify_100kb_ms": round(classify_ms, 2),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
