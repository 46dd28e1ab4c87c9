"""The sampler (temperature, top_k, top_p, min_p, seed) and stop strings across pieces."""

from __future__ import annotations

import math
from collections import Counter

import mlx.core as mx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local_engine.errors import EngineError
from local_engine.runtime.sampling import Sampler, SamplingError, SamplingParams, StopMatcher

PROBS = [0.5, 0.3, 0.15, 0.05]
DRAWS = 4000


def _logits(probs: list[float]) -> mx.array:
    # Unnormalised on purpose: the sampler must not assume log-probabilities.
    return mx.array([math.log(p) + 3.0 for p in probs])


def _draw(params: SamplingParams, probs: list[float] = PROBS, n: int = DRAWS) -> Counter[int]:
    batch = mx.broadcast_to(_logits(probs), (n, len(probs)))
    ids: list[int] = Sampler(params)(batch).tolist()  # type: ignore[assignment]
    return Counter(ids)


def test_temperature_zero_is_argmax() -> None:
    logits = mx.array([[0.1, 2.0, 1.9], [5.0, -1.0, 4.9]])
    assert Sampler(SamplingParams(temperature=0.0))(logits).tolist() == [1, 0]


def test_same_seed_same_tokens_different_seed_different_tokens() -> None:
    flat = mx.zeros((1000,))

    def run(seed: int) -> list[int]:
        sampler = Sampler(SamplingParams(temperature=1.0, seed=seed))
        return [int(sampler(flat).item()) for _ in range(20)]  # type: ignore[arg-type]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_unfiltered_draws_follow_the_distribution() -> None:
    counts = _draw(SamplingParams(temperature=1.0, seed=0))
    for token, p in enumerate(PROBS):
        # 4 standard deviations of a binomial proportion.
        assert abs(counts[token] / DRAWS - p) < 4 * math.sqrt(p * (1 - p) / DRAWS)


def test_low_temperature_sharpens_high_temperature_flattens() -> None:
    cold = _draw(SamplingParams(temperature=0.25, seed=1))
    hot = _draw(SamplingParams(temperature=4.0, seed=1))
    base = _draw(SamplingParams(temperature=1.0, seed=1))
    assert cold[0] > base[0] > hot[0]
    assert cold[3] < base[3] < hot[3]


def test_top_k_keeps_only_the_k_most_likely() -> None:
    counts = _draw(SamplingParams(temperature=1.0, top_k=2, seed=2))
    assert set(counts) == {0, 1}
    # Renormalised over the kept two: 0.5 / 0.8.
    assert abs(counts[0] / DRAWS - 0.625) < 0.04
    assert set(_draw(SamplingParams(temperature=1.0, top_k=1, seed=2), n=200)) == {0}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    # The mass before token 2 is 0.8: below that top_p excludes it, above it keeps it.
    assert set(_draw(SamplingParams(temperature=1.0, top_p=0.78, seed=3))) == {0, 1}
    assert set(_draw(SamplingParams(temperature=1.0, top_p=0.82, seed=3))) == {0, 1, 2}
    # The most likely token always survives, however small top_p is.
    assert set(_draw(SamplingParams(temperature=1.0, top_p=0.01, seed=3), n=200)) == {0}


def test_top_p_works_on_unsorted_vocabularies() -> None:
    probs = [0.05, 0.3, 0.15, 0.5]
    assert set(_draw(SamplingParams(temperature=1.0, top_p=0.78, seed=4), probs)) == {1, 3}


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    # Threshold 0.2 * 0.5 = 0.1: token 3 (0.05) goes, token 2 (0.15) stays.
    assert set(_draw(SamplingParams(temperature=1.0, min_p=0.2, seed=5))) == {0, 1, 2}
    assert set(_draw(SamplingParams(temperature=1.0, min_p=0.7, seed=5))) == {0}


def test_filters_compose() -> None:
    params = SamplingParams(temperature=1.0, top_k=3, top_p=0.9, min_p=0.4, seed=6)
    # top_k keeps {0,1,2}; top_p keeps all three of those; min_p (0.4 * 0.526) drops 2.
    assert set(_draw(params)) == {0, 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"min_p": 1.0},
        {"top_k": -1},
    ],
)
def test_out_of_range_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(SamplingError) as info:
        SamplingParams(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, EngineError)


def _feed_all(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    stopped = False
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            break
    out.append(matcher.flush())
    return "".join(out), stopped


def test_stop_string_split_across_pieces_is_found_and_never_emitted() -> None:
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("abc</") == ("abc", False)
    assert matcher.feed("en") == ("", False)
    assert matcher.feed("d>tail") == ("", True)
    assert matcher.stopped == "</end>"
    assert matcher.flush() == ""


def test_a_false_start_is_released_once_it_cannot_match() -> None:
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("x</e") == ("x", False)
    assert matcher.feed("x") == ("</ex", False)
    assert matcher.feed("<") == ("", False)
    assert matcher.flush() == "<"


def test_the_earliest_of_several_stop_strings_wins() -> None:
    assert _feed_all(["STOP", "wor"], ["hello ", "wo", "rld STOP"]) == ("hello ", True)


def test_no_stop_strings_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("anything") == ("anything", False)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab<>/", max_size=30),
    stops=st.lists(st.text(alphabet="ab<>/", min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=8),
)
def test_any_split_gives_the_text_up_to_the_first_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    # The stop that completes first ends the text (ties: the one that starts first).
    hits = [(text.find(s) + len(s), text.find(s)) for s in stops if s in text]
    expected = (text[: min(hits)[1]], True) if hits else (text, False)
    assert _feed_all(stops, pieces) == expected
