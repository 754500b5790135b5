"""The machine-speed context the bench prints under its targets (bench/targets.py)."""

from __future__ import annotations

import pytest

from bench.common import fmt
from bench.targets import MET, MISSED, check_all, machine_speed_lines


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
