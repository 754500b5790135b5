"""The durability model (shoal.common.durability) against hand-computed cases.

Notation: lam = node failures per hour, T = repair time in hours, m = n - k. The per-stripe
loss rate is n * C(n-1, m) * lam * (lam T)^m per hour; a year is 8766 hours.
"""

from __future__ import annotations

import argparse
import functools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.client.cli.cmd_durability import _inputs
from shoal.common import durability as d
from shoal.common.errors import InvalidArgument

YEAR = 8766.0


def test_failure_rate_makes_afr_the_probability_of_failing_within_a_year() -> None:
    # -ln(1 - 0.02) = 0.0202027073175..., per hour: / 8766 = 2.30467e-6.
    lam = d.failure_rate(0.02)
    assert lam == pytest.approx(0.0202027073175 / 8766, rel=1e-9)
    assert -math.expm1(-lam * YEAR) == pytest.approx(0.02, rel=1e-12)
    assert d.HOURS_PER_YEAR == YEAR


def test_two_copies_match_the_mirror_closed_form() -> None:
    # 1-of-2, lam = 1e-4/h, T = 10 h (mu = 0.1/h): m = 1, n * C(1, 1) = 2.
    # rate = 2 * 1e-4 * (1e-4 * 10) = 2e-7 per hour = 1 / (mu / (2 lam^2)) = 1 / 5e6 h.
    assert d.stripe_loss_rate(1, 2, 1e-4, 10.0) == pytest.approx(2e-7, rel=1e-12)
    # Exact Markov MTTDL of a mirror: (3 lam + mu) / (2 lam^2) = 0.1003 / 2e-8 = 5.015e6 h.
    assert d.markov_mttdl_hours(1, 2, 1e-4, 10.0) == pytest.approx(5.015e6, rel=1e-12)


def test_three_copies_match_the_triple_mirror_closed_form() -> None:
    # 1-of-3, lam = 1e-4/h, T = 10 h: m = 2, n * C(2, 2) = 3.
    # rate = 3 * 1e-4 * (1e-3)^2 = 3e-10 per hour = 1 / (mu^2 / (3 lam^3)) = 1 / 3.3333e9 h.
    assert d.stripe_loss_rate(1, 3, 1e-4, 10.0) == pytest.approx(3e-10, rel=1e-12)
    # Exact: (2 mu^2 + 7 lam mu + 11 lam^2) / (6 lam^3)
    #      = (0.02 + 0.00007 + 0.00000011) / 6e-12 = 0.02007011 / 6e-12 = 3.345018333e9 h.
    assert d.markov_mttdl_hours(1, 3, 1e-4, 10.0) == pytest.approx(3.345018333e9, rel=1e-9)


def test_four_of_six_by_hand() -> None:
    # (4, 6), lam = 1e-5/h, T = 10 h: m = 2, n * C(5, 2) = 6 * 10 = 60, lam T = 1e-4.
    # rate = 60 * 1e-5 * (1e-4)^2 = 60 * 1e-13 = 6e-12 per hour;
    # per year 6e-12 * 8766 = 5.2596e-8 (P = 1 - e^-5.2596e-8 = 5.2596e-8 to 3e-8 relative).
    # nines = -log10(5.2596e-8) = 8 - log10(5.2596) = 8 - 0.7209527 = 7.2790473.
    log_rate = d.log_stripe_loss_rate(4, 6, 1e-5, 10.0)
    assert math.exp(log_rate) == pytest.approx(6e-12, rel=1e-12)
    assert d.probability_from_log_rate(log_rate) == pytest.approx(5.2596e-8, rel=1e-7)
    assert d.nines_from_log_rate(log_rate) == pytest.approx(7.2790473, abs=1e-6)


def test_worked_example_of_the_docs() -> None:
    # docs/durability.md: defaults (30 s down-after, 15 min repair-after, 64 MiB/s), (4, 6),
    # AFR 2%, 1 TiB of shards per node. Rebuild = 4 * 2^40 / 2^26 = 65536 s;
    # T = (30 + 900 + 65536) / 3600 = 18.46278 h.
    repair = d.repair_time(
        k=4,
        down_after_s=30.0,
        repair_after_s=900.0,
        node_shards=2**20,
        node_bytes=2**40,
        mean_rebuild_s=0.0,
        repair_concurrency=4,
        repair_bandwidth=64 * 2**20,
    )
    assert repair.source == d.REPAIR_CONFIGURED
    assert repair.rebuild_s == 65536.0
    assert repair.hours == pytest.approx(66466 / 3600)
    # lam = 2.30467e-6/h, lam T = 4.25505e-5; rate = 60 * 2.30467e-6 * (4.25505e-5)^2
    # = 2.50363e-13/h; per year 2.19468e-9: 8.6586 nines.
    result = d.estimate(4, 6, nodes=6, afr=0.02, repair_hours=repair.hours)
    assert result.stripe_loss_per_year == pytest.approx(2.19468e-9, rel=1e-5)
    assert result.stripe_nines == pytest.approx(8.6586, abs=1e-4)
    assert result.overhead == 1.5
    assert result.tolerates == 2
    assert result.failures_per_repair == pytest.approx(4.25505e-5, rel=1e-5)
    assert result.any_loss_per_year is None  # no stripes given
    # 3x replication, same T: 3 in place of 60, so 1.09734e-10 per year, 9.9597 nines.
    replicated = d.estimate(1, 3, nodes=6, afr=0.02, repair_hours=repair.hours)
    assert replicated.stripe_loss_per_year == pytest.approx(1.09734e-10, rel=1e-5)
    assert replicated.stripe_nines == pytest.approx(9.9597, abs=1e-4)
    # 12 nodes with 2 Mi stripes: every 3-set of nodes holds a stripe, so the rate of any 3
    # concurrent failures: 12 * C(11, 2) = 660 in place of 60, 11 x 2.19468e-9 = 2.41415e-8 per
    # year, 7.6172 nines; the same for 3x replication (m + 1 = 3 as well).
    for k, n in ((4, 6), (1, 3)):
        big = d.estimate(k, n, nodes=12, afr=0.02, repair_hours=repair.hours, stripes=2**21)
        assert big.any_loss_per_year == pytest.approx(2.41415e-8, rel=1e-5)
        assert big.any_nines == pytest.approx(7.6172, abs=1e-4)


@pytest.mark.parametrize(("k", "n"), [(1, 2), (1, 3), (2, 3), (4, 6), (6, 9), (10, 14)])
def test_closed_form_is_the_leading_term_of_the_exact_markov_chain(k: int, n: int) -> None:
    lam, hours = 1e-6, 5.0  # lam T = 5e-6
    exact = 1.0 / d.markov_mttdl_hours(k, n, lam, hours)
    assert d.stripe_loss_rate(k, n, lam, hours) == pytest.approx(exact, rel=1e-3)
    # and errs on the safe side: it never predicts fewer losses than the chain
    assert d.stripe_loss_rate(k, n, lam, hours) >= exact


def test_cluster_wide_figure() -> None:
    lam_afr, hours = 0.02, 10.0
    # One stripe: exactly the per-stripe figure, whatever the node count.
    one = d.estimate(4, 6, nodes=100, afr=lam_afr, repair_hours=hours, stripes=1)
    assert one.any_loss_per_year == pytest.approx(one.stripe_loss_per_year, rel=1e-9)
    # n == nodes: every stripe covers every node set, any number of stripes counts once.
    same = d.estimate(4, 6, nodes=6, afr=lam_afr, repair_hours=hours, stripes=10**6)
    assert same.any_loss_per_year == pytest.approx(same.stripe_loss_per_year, rel=1e-9)
    # Few stripes on many nodes: about S times the stripe figure (2 * q = 2 * 20 / 161700).
    two = d.estimate(4, 6, nodes=100, afr=lam_afr, repair_hours=hours, stripes=2)
    assert two.any_loss_per_year == pytest.approx(2 * two.stripe_loss_per_year, rel=1e-4)
    # Many stripes on 8 nodes: every 3-set holds a stripe (q = C(6,3)/C(8,3) = 20/56), so the
    # rate of any 3 concurrent failures: 8 * C(7, 2) = 168 in place of 60, 2.8x.
    many = d.estimate(4, 6, nodes=8, afr=lam_afr, repair_hours=hours, stripes=10**4)
    assert many.any_loss_per_year == pytest.approx(2.8 * many.stripe_loss_per_year, rel=1e-6)
    assert many.any_nines is not None
    assert many.any_nines == pytest.approx(many.stripe_nines - math.log10(2.8), abs=1e-6)


def test_wide_codes_get_nines_even_when_the_probability_underflows() -> None:
    result = d.estimate(100, 200, nodes=1000, afr=0.02, repair_hours=10.0, stripes=10**6)
    assert result.stripe_loss_per_year == 0.0
    assert 300 < result.stripe_nines < math.inf
    assert result.any_nines is not None
    assert 300 < result.any_nines < result.stripe_nines


def test_hopeless_inputs_give_zero_nines_not_errors() -> None:
    result = d.estimate(1, 2, nodes=2, afr=0.99, repair_hours=1e5)
    assert result.stripe_loss_per_year == pytest.approx(1.0)
    assert result.stripe_nines == pytest.approx(0.0, abs=1e-6)
    assert result.failures_per_repair > 1


def test_repair_time_sources() -> None:
    repair_time = functools.partial(
        d.repair_time, k=4, down_after_s=30.0, repair_after_s=900.0, repair_concurrency=4
    )
    # Measured: 1000 shards x 2 s / 4 at once = 500 s (the bandwidth bound, 4 * 1 MiB / 64 MiB/s
    # = 0.0625 s, is lower).
    measured = repair_time(
        node_shards=1000, node_bytes=2**20, mean_rebuild_s=2.0, repair_bandwidth=2**26
    )
    assert (measured.source, measured.rebuild_s) == (d.REPAIR_MEASURED, 500.0)
    assert measured.hours == pytest.approx((30 + 900 + 500) / 3600)
    # Measured durations exclude throttle waits: the bandwidth bound still applies
    # (4 * 2^36 / 2^26 = 4096 s > 500 s).
    bound = repair_time(
        node_shards=1000, node_bytes=2**36, mean_rebuild_s=2.0, repair_bandwidth=2**26
    )
    assert (bound.source, bound.rebuild_s) == (d.REPAIR_MEASURED, 4096.0)
    configured = repair_time(
        node_shards=1000, node_bytes=2**36, mean_rebuild_s=0.0, repair_bandwidth=2**26
    )
    assert (configured.source, configured.rebuild_s) == (d.REPAIR_CONFIGURED, 4096.0)
    empty = repair_time(node_shards=0, node_bytes=0, mean_rebuild_s=0.0, repair_bandwidth=2**26)
    assert empty.hours == pytest.approx(930 / 3600)
    with pytest.raises(InvalidArgument, match="--repair-hours"):
        repair_time(node_shards=10, node_bytes=2**20, mean_rebuild_s=0.0, repair_bandwidth=0)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"afr": 2.0}, "annual failure rate 2: need 0 < afr < 1"),
        ({"afr": 0.0}, "need 0 < afr < 1"),
        ({"afr": 1.0}, "need 0 < afr < 1"),
        ({"afr": -0.5}, "need 0 < afr < 1"),
        ({"afr": math.nan}, "need 0 < afr < 1"),
        ({"k": 6, "n": 4}, "invalid redundancy k=6, n=4"),
        ({"k": 0}, "invalid redundancy"),
        ({"k": 6}, "invalid redundancy"),
        ({"n": 257, "nodes": 300}, "n <= 256"),
        ({"n": 8}, "n=8 shards cannot be placed on 6 nodes"),
        ({"repair_hours": 0.0}, "invalid repair time"),
        ({"repair_hours": -1.0}, "invalid repair time"),
        ({"repair_hours": math.inf}, "invalid repair time"),
        ({"stripes": -1}, "invalid stripe count"),
    ],
)
def test_invalid_inputs_are_one_line_invalid_arguments(
    overrides: dict[str, float], fragment: str
) -> None:
    args: dict[str, float] = {"k": 4, "n": 6, "nodes": 6, "afr": 0.02, "repair_hours": 1.0}
    args.update(overrides)
    with pytest.raises(InvalidArgument) as caught:
        d.estimate(
            int(args["k"]),
            int(args["n"]),
            nodes=int(args["nodes"]),
            afr=args["afr"],
            repair_hours=args["repair_hours"],
            stripes=int(args.get("stripes", 0)),
        )
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


# Monotonicity. The first-order model needs lam T well below (m + 1) / (n + 1) for parity to
# help (each added shard multiplies the rate by (n + 1) lam T / (m + 1)); these ranges keep
# lam T <= 2.6e-3, below the 2 / 257 of the widest code.
AFRS = st.floats(min_value=0.001, max_value=0.2)
HOURS = st.floats(min_value=0.01, max_value=100.0)
CODES = st.integers(min_value=1, max_value=200).flatmap(
    lambda k: st.tuples(st.just(k), st.integers(min_value=k + 1, max_value=255))
)


@given(code=CODES, afr=AFRS, hours=HOURS)
def test_more_parity_gives_more_nines(code: tuple[int, int], afr: float, hours: float) -> None:
    k, n = code
    base = d.estimate(k, n, nodes=n + 1, afr=afr, repair_hours=hours).stripe_nines
    wider = d.estimate(k, n + 1, nodes=n + 1, afr=afr, repair_hours=hours).stripe_nines
    assert wider > base  # one more parity shard
    if k > 1:
        traded = d.estimate(k - 1, n, nodes=n + 1, afr=afr, repair_hours=hours).stripe_nines
        assert traded > base  # a data shard turned into parity


@given(code=CODES, afr=AFRS, hours=HOURS, factor=st.floats(min_value=1.01, max_value=4.0))
def test_higher_afr_gives_fewer_nines(
    code: tuple[int, int], afr: float, hours: float, factor: float
) -> None:
    k, n = code
    low = d.estimate(k, n, nodes=n, afr=afr, repair_hours=hours)
    high = d.estimate(k, n, nodes=n, afr=min(afr * factor, 0.99), repair_hours=hours)
    assert high.stripe_nines < low.stripe_nines


@given(code=CODES, afr=AFRS, hours=HOURS, factor=st.floats(min_value=1.01, max_value=100.0))
def test_longer_repair_gives_fewer_nines(
    code: tuple[int, int], afr: float, hours: float, factor: float
) -> None:
    k, n = code
    short = d.estimate(k, n, nodes=n, afr=afr, repair_hours=hours)
    long = d.estimate(k, n, nodes=n, afr=afr, repair_hours=hours * factor)
    assert long.stripe_nines < short.stripe_nines


def test_cli_inputs_average_live_nodes_and_use_the_measured_rebuild_time() -> None:
    def node(state: str, shards: int, used: int) -> dict[str, object]:
        return {"state": state, "shards": shards, "used_bytes": used}

    status = {
        "default_redundancy": {"k": 4, "n": 6},
        # the down and draining nodes count neither as nodes nor in the per-node means
        "nodes": [node("up", 100, 2**30)] * 5
        + [node("suspect", 300, 3 * 2**30), node("down", 999, 2**40), node("draining", 1, 1)],
        "stripes_by_healthy_shards": {"6": 40, "5": 2},
        "timings": {
            "down_after_s": 30.0,
            "repair_after_s": 900.0,
            "repair_bandwidth_bytes_s": 2**30,
            "repair_concurrency": 2,
        },
        "repair": {"mean_rebuild_s": 1.5},
    }
    args = argparse.Namespace(k=None, n=None, nodes=None, repair_hours=None, stripes=None)
    inputs = _inputs(args, status)
    assert (inputs.k, inputs.n, inputs.nodes, inputs.stripes) == (4, 6, 6, 42)
    # mean shards (5 * 100 + 300) / 6 = 133.33; x 1.5 s / 2 at once = 100 s (the bandwidth
    # bound: 4 * (8/6) GiB / 1 GiB/s = 5.3 s).
    assert inputs.repair.source == d.REPAIR_MEASURED
    assert inputs.repair.rebuild_s == pytest.approx(100.0)
    assert inputs.repair.hours == pytest.approx(1030 / 3600)
