"""The project's red-team corpus: every case goes where it must, and no output holds a secret.

The corpus (``data/redteam.jsonl``, written for this project) covers the classes of
issue 14: credentials of many providers and shapes, personal data of many countries,
benign near-misses, and the tricks that hid them (escapes, notebooks, diffs, prose,
zero-width characters, confusables, wrapped tokens). ``bench/redteam.py`` prints the
same figures as JSON.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_redteam", REPO / "bench" / "redteam.py")
assert _spec is not None and _spec.loader is not None
redteam = importlib.util.module_from_spec(_spec)
sys.modules["bench_redteam"] = redteam
_spec.loader.exec_module(redteam)

CASES = redteam.load_corpus()
CONFIG = redteam.corpus_config()


def test_the_corpus_covers_the_classes() -> None:
    assert len(CASES) >= 250
    classes = Counter(c["class"] for c in CASES)
    assert classes["credential"] >= 100 and classes["pii"] >= 60 and classes["benign"] >= 80
    tricks = {c["trick"] for c in CASES}
    assert {"escaped-json", "notebook", "diff", "prose", "zero-width", "wrapped"} <= tricks
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert all(c.get("secret") for c in CASES if c["class"] != "benign")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_goes_where_it_must_and_nothing_leaks(case: dict) -> None:
    target, outputs = redteam.route_case(case, CONFIG)
    expected = "cloud" if case["class"] == "benign" else "local"
    assert target == expected, case.get("note")
    secret = case.get("secret")
    if secret:
        assert not any(secret in out for out in outputs)


def test_the_figures_meet_the_targets() -> None:
    report = redteam.evaluate(CASES)
    assert report["credentials_to_cloud"] == 0
    assert report["pii_to_cloud_pct"] <= 2
    assert report["benign_kept_off_cloud_pct"] <= 5
    assert report["leaks"] == 0
