"""Red-team figures of the privacy scan on the project's corpus: one JSON object.

The corpus (``tests/ds4router/data/redteam.jsonl``) holds cases written for this
project: credentials of many providers and shapes, personal data of many countries
and formats, benign near-misses, and tricks (escapes, notebooks, diffs, prose,
zero-width characters, confusables, wrapped tokens). Each case is classified and
routed with a project whose default route is a cloud model (privacy.default public,
cloud_max_privacy internal); a credential or personal data must stay off the cloud,
a benign case should go to it. ``leaks`` counts cases where the secret appears in
the route JSON, the explain view or a finding's rendering.

Targets: credentials_to_cloud 0, pii_to_cloud_pct <= 2, benign_kept_off_cloud_pct <= 5,
leaks 0.  Run: ``PYTHONPATH=$PWD python bench/redteam.py [--show-misses]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "ds4router" / "data" / "redteam.jsonl"


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def corpus_config() -> Any:
    from ds4router.config import Config, load_config

    data = load_config(cwd=Path("/")).config.model_dump(mode="json")
    data.update(
        default="cloud:openai/gpt-4.1",
        routes=[],
        privacy={**data["privacy"], "default": "public", "cloud_max_privacy": "internal"},
    )
    return Config.model_validate(data)


def route_case(case: dict[str, Any], config: Any) -> tuple[str, list[str]]:
    """(target, every rendering of the decision that a user or a log could see)."""
    from rich.console import Console

    from ds4router.routing.classify import classify
    from ds4router.routing.explain import badge, decision_dict, explain_renderable
    from ds4router.routing.request import Request
    from ds4router.routing.router import RouterState, decide
    from ds4router.targets import CloudModel, Refuse

    request = classify(Request(case["text"]), config)
    decision = decide(request, config, RouterState())
    match decision.target:
        case CloudModel():
            where = "cloud"
        case Refuse():
            where = "refuse"
        case _:
            where = "local"
    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(explain_renderable(decision, request))
    outputs = [
        json.dumps(decision_dict(decision, request)),
        console.export_text(),
        badge(decision),
        repr(request.privacy),
        *(str(f.finding) for f in request.privacy.findings),
    ]
    console.file.close()
    return where, outputs


def evaluate(cases: list[dict[str, Any]]) -> dict[str, Any]:
    config = corpus_config()
    counts = {"credential": [0, 0], "pii": [0, 0], "benign": [0, 0]}  # [total, wrong]
    leaks = 0
    misses: list[str] = []
    for case in cases:
        target, outputs = route_case(case, config)
        total = counts[case["class"]]
        total[0] += 1
        wrong = (target == "cloud") != (case["class"] == "benign")
        if wrong:
            total[1] += 1
            misses.append(f"{case['id']} ({case['trick']}, {case.get('note', '')}) -> {target}")
        secret = case.get("secret")
        if secret and any(secret in out for out in outputs):
            leaks += 1
            misses.append(f"{case['id']}: LEAK")
    pct = lambda n, d: round(100.0 * n / d, 2) if d else 0.0  # noqa: E731
    return {
        "cases": len(cases),
        "credentials": counts["credential"][0],
        "credentials_to_cloud": counts["credential"][1],
        "pii": counts["pii"][0],
        "pii_to_cloud": counts["pii"][1],
        "pii_to_cloud_pct": pct(counts["pii"][1], counts["pii"][0]),
        "benign": counts["benign"][0],
        "benign_kept_off_cloud": counts["benign"][1],
        "benign_kept_off_cloud_pct": pct(counts["benign"][1], counts["benign"][0]),
        "leaks": leaks,
        "misses": misses,
    }


def main() -> None:
    report = evaluate(load_corpus())
    if "--show-misses" not in sys.argv:
        report.pop("misses")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
