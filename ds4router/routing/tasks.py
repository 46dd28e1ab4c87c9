"""The task type of a request: ``/task NAME`` wins, else a transparent scored classifier.

Each task has keywords (whole words or phrases, case-insensitive) and regexes;
every distinct feature that matches adds the task's weight. The best score at
or above ``classifier.min_score`` wins, else ``classifier.fallback``. The
result lists every task's score and the features that matched, so a user can
see why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ds4router.config.schema import TASK_TYPES, ClassifierConfig
from ds4router.errors import Ds4RouterError
from ds4router.routing.request import task_tag

# Only the head and tail of a huge prompt are scored: the ask is there, and a
# 100 KB paste of code should not cost more than a glance.
_SCAN_HEAD = 16_000
_SCAN_TAIL = 4_000


@dataclass(frozen=True)
class TaskResult:
    task: str
    score: float | None  # None when a /task tag decided
    source: str  # "tag", "classifier" or "fallback"
    scores: tuple[tuple[str, float], ...] = ()
    features: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def features_of(self, task: str) -> tuple[str, ...]:
        return dict(self.features).get(task, ())


@dataclass(frozen=True)
class _CompiledTask:
    name: str
    weight: float
    keywords: re.Pattern[str] | None
    patterns: tuple[tuple[str, re.Pattern[str]], ...]


def known_tasks(config: ClassifierConfig) -> list[str]:
    return sorted(set(TASK_TYPES) | set(config.tasks))


def classify_task(text: str, config: ClassifierConfig) -> TaskResult:
    tagged = task_tag(text)
    if tagged is not None:
        valid = known_tasks(config)
        if tagged not in valid:
            raise Ds4RouterError(
                f"/task {tagged}: unknown task type; use one of {', '.join(valid)} "
                "(or define it under classifier.tasks in .ds4router.yaml)"
            )
        return TaskResult(tagged, None, "tag")

    sample = (
        text
        if len(text) <= _SCAN_HEAD + _SCAN_TAIL
        else text[:_SCAN_HEAD] + "\n" + text[-_SCAN_TAIL:]
    )
    lowered = sample.lower()
    scores: list[tuple[str, float]] = []
    features: list[tuple[str, tuple[str, ...]]] = []
    for task in _compile(config.model_dump_json()):
        hits: dict[str, None] = {}
        if task.keywords is not None:
            for match in task.keywords.finditer(lowered):
                hits.setdefault(match.group(0), None)
        for source, pattern in task.patterns:
            if pattern.search(sample):
                hits.setdefault(f"/{source}/", None)
        scores.append((task.name, len(hits) * task.weight))
        features.append((task.name, tuple(hits)))
    scores.sort(key=lambda item: (-item[1], item[0]))
    best, best_score = scores[0] if scores else (config.fallback, 0.0)
    if best_score >= config.min_score and best_score > 0:
        return TaskResult(best, best_score, "classifier", tuple(scores), tuple(features))
    return TaskResult(config.fallback, best_score, "fallback", tuple(scores), tuple(features))


@lru_cache(maxsize=16)
def _compile(config_json: str) -> tuple[_CompiledTask, ...]:
    config = ClassifierConfig.model_validate_json(config_json)
    out = []
    for name, spec in sorted(config.tasks.items()):
        keywords = None
        if spec.keywords:
            words = sorted({k.lower() for k in spec.keywords}, key=len, reverse=True)
            alternation = "|".join(re.escape(w) for w in words)
            keywords = re.compile(rf"(?<![\w'])(?:{alternation})(?![\w'])")
        patterns = tuple((p, re.compile(p, re.IGNORECASE | re.MULTILINE)) for p in spec.patterns)
        out.append(_CompiledTask(name, spec.weight, keywords, patterns))
    return tuple(out)
