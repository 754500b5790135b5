"""The machine-speed context the bench prints under its targets, and the peer targets'
same-run references with their fallback on the published figures (bench/targets.py)."""

from __future__ import annotations

import pytest

from bench.common import fmt
from bench.targets import (
    DASK,
    MET,
    MISSED,
    POOL,
    RAY,
    SPARK,
    TARGETS,
    UNMEASURED,
    Published,
    Target,
    check,
    check_all,
    machine_speed_lines,
    published,
)


def test_machine_speed_scales_the_peer_targets_by_the_ceiling_ratio() -> None:
    # The published ceilings are 276 (put 64 MiB) and 800 (get 64 MiB) MiB/s.
    figures = {"ceiling_put_64mib": 138.0, "put_64mib": 120.0, "ceiling_get_64mib": 1000.0}
    lines = machine_speed_lines(figures)
    put = next(line for line in lines if "put 64 MiB" in line)
    get = next(line for line in lines if "get 64 MiB" in line)
    assert "0.50x" in put
    assert ">= 122 MiB/s" in put  # 2 x Swift's 122 (= 4 x Tahoe's 61) x 0.5
    assert "Shoal 120" in put
    assert "1.25x" in get
    assert ">= 566 MiB/s" in get  # 2.5 x Swift's 181 x 1.25
    assert "Shoal" not in get  # no get figure in this run


def test_no_ceiling_no_context() -> None:
    assert machine_speed_lines({"put_64mib": 100.0}) == []


@pytest.mark.parametrize(("shoal", "verdict"), [(245.0, MET), (243.0, MISSED)])
def test_the_verdicts_stay_on_the_published_figures(shoal: float, verdict: str) -> None:
    # A slow machine (half the published ceiling) does not lower the bar of 2x Swift's 122.
    figures = {"put_64mib": shoal, "ceiling_put_64mib": 138.0}
    swift = next(v for v in check_all(figures) if "Swift" in v.needed and "put" in v.what)
    assert swift.verdict == verdict


def test_a_same_run_reference_prints_in_full() -> None:
    # A ceiling above 1,000 MiB/s reads "1,038", not "1.04e+03".
    figures = {"get_64mib": 562.0, "ceiling_get_64mib": 1038.2}
    ceiling = next(v for v in check_all(figures) if "ceiling" in v.needed and "get" in v.what)
    assert "(1,038)" in ceiling.needed
    assert ceiling.verdict == MET


@pytest.mark.parametrize(("value", "text"), [(999.4, "999"), (999.6, "1,000"), (1038.2, "1,038")])
def test_figures_near_a_thousand_never_print_as_powers_of_ten(value: float, text: str) -> None:
    assert fmt(value) == text


# The peer targets: the same-run figure when bench/peers measured it, else the published one.
# (reference key, the published figure it falls back to, the same-run name, Shoal's key)
PEER_TARGETS = [
    ("ray_noop_tasks_s", published(RAY, "no-op tasks"), "Ray, same run", "noop_tasks_s"),
    ("dask_wordcount_s", published(DASK, "word count 256 MiB"), "Dask, same run", "wordcount_s"),
    ("ray_wordcount_s", published(RAY, "word count 256 MiB"), "Ray, same run", "wordcount_s"),
    (
        "spark_wordcount_s",
        published(SPARK, "word count 256 MiB"),
        "PySpark local, same run",
        "wordcount_s",
    ),
]


def peer_target(reference_key: str) -> Target:
    (target,) = (t for t in TARGETS if t.reference_key == reference_key)
    return target


@pytest.mark.parametrize(("reference_key", "peer", "name", "key"), PEER_TARGETS)
def test_a_peer_target_falls_back_on_the_published_figure(
    reference_key: str, peer: Published, name: str, key: str
) -> None:
    target = peer_target(reference_key)
    assert (target.key, target.peer) == (key, peer)
    # Shoal just on the winning side of the published figure (which is 1,500 tasks/s for Ray
    # and 8, 10, 13 s for the word counts); nothing measured for the peer in this run.
    shoal = peer.value * (1.01 if target.op == ">=" else 0.99)
    verdict = check(target, {key: shoal, "wordcount_mib": 256.0})
    assert verdict.bound == peer.value
    assert verdict.verdict == MET
    assert f"({peer.label()}, published)" in verdict.needed
    assert name not in verdict.needed


@pytest.mark.parametrize(("reference_key", "peer", "name", "key"), PEER_TARGETS)
def test_a_peer_target_uses_the_same_run_figure_when_measured(
    reference_key: str, peer: Published, name: str, key: str
) -> None:
    target = peer_target(reference_key)
    # The same Shoal figure beats the published one but not the peer as measured in this run
    # (twice as fast as published), so the verdict tells which reference was used.
    shoal = peer.value * (1.01 if target.op == ">=" else 0.99)
    measured = peer.value * 2 if target.op == ">=" else peer.value / 2
    verdict = check(target, {key: shoal, reference_key: measured, "wordcount_mib": 32.0})
    assert verdict.bound == measured
    assert verdict.verdict == MISSED
    assert verdict.needed.startswith(f"{'at least' if target.op == '>=' else 'under'} {name} (")
    assert "published" not in verdict.needed
    assert verdict.note == ""  # a same-run peer counts the same corpus, whatever its size


def test_a_published_word_count_at_another_size_is_not_comparable() -> None:
    verdict = check(peer_target("spark_wordcount_s"), {"wordcount_s": 5.0, "wordcount_mib": 32.0})
    assert verdict.verdict == f"{MET} (not comparable)"
    assert "32 MiB" in verdict.note


def test_the_word_count_must_beat_dask_ray_and_pyspark_and_stay_near_pool() -> None:
    counts = [t for t in TARGETS if t.key == "wordcount_s"]
    assert sorted(t.reference_key for t in counts) == [
        "dask_wordcount_s",
        "pool_wordcount_s",
        "ray_wordcount_s",
        "spark_wordcount_s",
    ]
    # Pool(2) is the 1.3x reference, never a published "under 7 s" target.
    (pool,) = (t for t in counts if t.reference_key == "pool_wordcount_s")
    assert (pool.op, pool.factor, pool.peer) == ("<=", 1.3, None)
    assert all(t.peer is None or t.peer.system != POOL for t in TARGETS)
    # 12 s beats PySpark's published 13 s but neither Dask's 10 nor Ray's 8 (published).
    verdicts = [check(t, {"wordcount_s": 12.0, "wordcount_mib": 256.0}) for t in counts]
    assert [v.verdict for v in verdicts] == [MISSED, MISSED, MET, UNMEASURED]
