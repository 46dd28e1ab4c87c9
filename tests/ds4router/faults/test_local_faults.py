"""A local generation killed mid-answer: the real CLI on a tiny random engine.

The child ``ask`` answers with the in-process engine (a tiny random checkpoint, a
long answer allowed); once its first words are on stdout it is killed with
SIGKILL. Its write-ahead row is on disk, ``started`` on the local route, and the
next start marks it ``interrupted``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml
from fault_support import Child, assert_clean, raw_rows, run_cli

from local_engine.checkpoint.random_weights import write_random_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("fault-tiny"), preset="tiny", seed=0)


def test_sigkill_during_a_local_generation_leaves_an_interrupted_row(
    tmp_path: Path, tiny: Path
) -> None:
    project = tmp_path / "acme"
    project.mkdir()
    config = {
        "project": "acme",
        "default": "local",
        "fallback": {"local_unavailable": None},
        # A random model never stops by itself: it streams until killed.
        "local": {
            "engine": {"model_path": str(tiny), "max_tokens": 100_000},
            "power": {"watts": 90.0, "source": "configured"},
        },
    }
    (project / ".ds4router.yaml").write_text(yaml.safe_dump(config))
    child = Child("ask", "hello", "--project", str(project))
    child.wait_for_output()
    child.signal(signal.SIGKILL)
    code, _, err = child.finish()
    assert code == -signal.SIGKILL
    assert_clean(err)
    ((status, route, input_tokens),) = raw_rows("ledger", "status, route, input_tokens")
    assert (status, route) == ("started", "local") and input_tokens > 0

    code, out, err = run_cli("report", "--format", "json")
    assert code == 0, err
    totals = json.loads(out)["totals"]
    assert (totals["requests"], totals["interrupted"]) == (1, 1)
    assert [r[0] for r in raw_rows("ledger", "status")] == ["interrupted"]
