"""How likely a `(k, n)` stripe is to be lost in a year: the model behind `clusterctl durability`.

Pure arithmetic, no I/O. The model, its derivation and its assumptions are in
docs/durability.md; in short:

- each node fails independently, with exponentially distributed times to failure at rate
  `lam = -ln(1 - afr)` per year (so it fails within a year with probability `afr`);
- a failed node's shards are missing for `T` hours (detection + repair-after + rebuild), then
  restored elsewhere;
- a stripe whose `n` shards sit on `n` distinct nodes is lost when `m + 1` of those nodes are
  failed at once, `m = n - k`. To first order in `lam * T` that happens at the rate

      rate = n * C(n - 1, m) * lam * (lam * T) ** m      per hour (lam per hour, T in hours)

  (one of the n nodes fails, then m of the other n - 1 fail before it is repaired), which is
  `1 / MTTDL` of the classic Markov model with independent repairs;
- P(loss within a year) = 1 - exp(-rate * year); nines = -log10(P).

Rates are computed in log space: for wide codes `lam ** (m + 1)` underflows a float long
before the probability stops meaning something.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shoal.common.erasure import check_redundancy
from shoal.common.errors import InvalidArgument

HOURS_PER_YEAR = 365.25 * 24
# Below this expected number of losses per year, -log10(x) equals -log10(1 - e^-x) to 1e-12.
_SMALL = 1e-12
REPAIR_MEASURED = "measured over recent repairs"
REPAIR_CONFIGURED = "configured"
REPAIR_GIVEN = "given"


def check_afr(afr: float) -> None:
    """Raise InvalidArgument unless 0 < afr < 1 (a probability per node per year)."""
    if not 0 < afr < 1:  # also rejects NaN
        raise InvalidArgument(
            f"invalid annual failure rate {afr:g}: need 0 < afr < 1 (e.g. 0.02 for 2%)"
        )


def check_repair_hours(hours: float) -> None:
    """Raise InvalidArgument unless the repair time is a positive, finite number of hours."""
    if not 0 < hours < math.inf:
        raise InvalidArgument(f"invalid repair time {hours:g} hours: need a positive number")


def check_placement(n: int, nodes: int) -> None:
    """Raise InvalidArgument when `n` shards cannot sit on `n` distinct nodes of `nodes`."""
    if n > nodes:
        raise InvalidArgument(
            f"a stripe of n={n} shards cannot be placed on {nodes} nodes "
            "(every shard needs its own node)"
        )


def failure_rate(afr: float) -> float:
    """Failures per node-hour for an annual failure probability `afr` (exponential lifetimes)."""
    check_afr(afr)
    return -math.log1p(-afr) / HOURS_PER_YEAR


def log_stripe_loss_rate(k: int, n: int, lam: float, repair_hours: float) -> float:
    """ln(stripe losses per hour): ln(n * C(n-1, m) * lam^(m+1) * T^m), m = n - k.

    `lam` is the node failure rate per hour, `repair_hours` the time `T` a failed node's shards
    stay missing. First-order in `lam * T` (see docs/durability.md).
    """
    check_redundancy(k, n)
    return _log_concurrent_rate(n, n - k + 1, lam, repair_hours)


def _log_concurrent_rate(nodes: int, failed: int, lam: float, repair_hours: float) -> float:
    """ln(rate per hour) at which `failed` of `nodes` nodes come to be failed at once.

    One of them fails (rate nodes * lam), then failed - 1 of the other nodes - 1 fail within
    its repair window T: nodes * C(nodes - 1, failed - 1) * lam * (lam T)^(failed - 1).
    """
    m = failed - 1
    return (
        math.log(nodes)
        + math.log(math.comb(nodes - 1, m))
        + (m + 1) * math.log(lam)
        + m * math.log(repair_hours)
    )


def stripe_loss_rate(k: int, n: int, lam: float, repair_hours: float) -> float:
    """Stripe losses per hour (may underflow to 0.0 for wide codes; see the log version)."""
    return math.exp(log_stripe_loss_rate(k, n, lam, repair_hours))


def markov_mttdl_hours(k: int, n: int, lam: float, repair_hours: float) -> float:
    """Exact mean time to data loss (hours) of the birth-death chain the closed form approximates.

    State i = failed shards of the stripe (0..m); i -> i+1 at rate (n - i) * lam, i -> i-1 at
    rate i / T (each failed shard repaired independently after an exponential time of mean T);
    state m + 1 is data loss. For checking the closed form: it overflows floats for large m.
    """
    check_redundancy(k, n)
    mu = 1.0 / repair_hours
    total = 0.0
    step = 0.0  # expected time to first reach state i + 1 from state i
    for i in range(n - k + 1):
        up = (n - i) * lam
        step = 1.0 / up + (i * mu / up) * step
        total += step
    return total


def probability_from_log_rate(log_rate: float, hours: float = HOURS_PER_YEAR) -> float:
    """P(at least one loss in `hours`) for a Poisson rate exp(log_rate) per hour."""
    return -math.expm1(-math.exp(log_rate) * hours)


def nines_from_log_rate(log_rate: float, hours: float = HOURS_PER_YEAR) -> float:
    """-log10 P(at least one loss in `hours`), accurate even when P underflows a float."""
    log10_expected = (log_rate + math.log(hours)) / math.log(10)
    if log10_expected < math.log10(_SMALL):
        return -log10_expected
    probability = probability_from_log_rate(log_rate, hours)
    return -math.log10(probability) if probability < 1.0 else 0.0


def log_coverage(k: int, n: int, nodes: int, stripes: int) -> float:
    """ln of the chance that a given set of m+1 nodes holds m+1 shards of some stripe.

    Stripes are modelled as `stripes` independent uniformly random n-subsets of the nodes; a
    given (m+1)-set lies inside one of them with probability q = C(n, m+1) / C(nodes, m+1).
    Returns -inf for no stripes.
    """
    if stripes <= 0:
        return -math.inf
    m = n - k
    log_q = math.log(math.comb(n, m + 1)) - math.log(math.comb(nodes, m + 1))
    if log_q >= 0.0:  # nodes == n: every stripe covers every (m+1)-set
        return 0.0
    if math.log(stripes) + log_q < math.log(1e-8):  # 1 - (1 - q)^S = S * q to 1e-8
        return math.log(stripes) + log_q
    return math.log(-math.expm1(stripes * math.log1p(-math.exp(log_q))))


@dataclass(frozen=True)
class Estimate:
    """The durability of a `(k, n)` stripe on `nodes` nodes, per year."""

    k: int
    n: int
    nodes: int
    afr: float
    repair_hours: float
    stripes: int
    stripe_loss_per_year: float
    stripe_nines: float
    # Loss of at least one of `stripes` stripes (None when there are none).
    any_loss_per_year: float | None
    any_nines: float | None

    @property
    def overhead(self) -> float:
        """Raw bytes stored per object byte: n / k."""
        return self.n / self.k

    @property
    def tolerates(self) -> int:
        """Nodes that can be down at once without losing the stripe: n - k."""
        return self.n - self.k

    @property
    def failures_per_repair(self) -> float:
        """lam * T: the expected failures of one node during one repair window.

        The model is first order in this number; it is good while it is well below 0.1.
        """
        return failure_rate(self.afr) * self.repair_hours


def estimate(
    k: int, n: int, *, nodes: int, afr: float, repair_hours: float, stripes: int = 0
) -> Estimate:
    """Validate the inputs and estimate per-stripe and (given `stripes`) cluster-wide loss.

    Cluster-wide: the rate at which some m+1 of the `nodes` are failed at once,
    nodes * C(nodes - 1, m) * lam * (lam T)^m, times the chance that those nodes hold m+1
    shards of one of the `stripes` stripes (random placement, see `log_coverage`).
    """
    check_redundancy(k, n)
    check_afr(afr)
    check_repair_hours(repair_hours)
    check_placement(n, nodes)
    if stripes < 0:
        raise InvalidArgument(f"invalid stripe count {stripes}: need >= 0")
    lam = failure_rate(afr)
    log_rate = log_stripe_loss_rate(k, n, lam, repair_hours)
    any_loss: float | None = None
    any_nines: float | None = None
    if stripes:
        log_any = _log_concurrent_rate(nodes, n - k + 1, lam, repair_hours) + log_coverage(
            k, n, nodes, stripes
        )
        any_loss = probability_from_log_rate(log_any)
        any_nines = nines_from_log_rate(log_any)
    return Estimate(
        k=k,
        n=n,
        nodes=nodes,
        afr=afr,
        repair_hours=repair_hours,
        stripes=stripes,
        stripe_loss_per_year=probability_from_log_rate(log_rate),
        stripe_nines=nines_from_log_rate(log_rate),
        any_loss_per_year=any_loss,
        any_nines=any_nines,
    )


@dataclass(frozen=True)
class RepairTime:
    """How long a failed node's shards stay missing, and where the figure comes from."""

    detect_s: float  # down-after: silence before the node counts as down
    wait_s: float  # repair-after: down this long before its shards are rebuilt
    rebuild_s: float  # rebuilding one node's shards elsewhere
    source: str  # REPAIR_MEASURED, REPAIR_CONFIGURED or REPAIR_GIVEN

    @property
    def hours(self) -> float:
        return (self.detect_s + self.wait_s + self.rebuild_s) / 3600.0


def repair_time(
    *,
    k: int,
    down_after_s: float,
    repair_after_s: float,
    node_shards: float,
    node_bytes: float,
    mean_rebuild_s: float,
    repair_concurrency: int,
    repair_bandwidth: float,
) -> RepairTime:
    """The repair window T of one failed node, from the cluster's settings and measurements.

    Rebuild time: measured (`mean_rebuild_s` > 0) = node_shards * mean_rebuild_s /
    repair_concurrency, but never less than the bandwidth bound, because the measured
    durations exclude waiting for the bandwidth throttle; configured = the bandwidth bound,
    k * node_bytes / repair_bandwidth (rebuilding a shard reads k shards).
    """
    bandwidth_s = k * node_bytes / repair_bandwidth if repair_bandwidth > 0 else None
    if mean_rebuild_s > 0:
        measured_s = node_shards * mean_rebuild_s / max(repair_concurrency, 1)
        rebuild_s, source = max(measured_s, bandwidth_s or 0.0), REPAIR_MEASURED
    elif bandwidth_s is not None:
        rebuild_s, source = bandwidth_s, REPAIR_CONFIGURED
    else:
        raise InvalidArgument(
            "the coordinator reports neither measured rebuild times nor its repair bandwidth; "
            "pass --repair-hours"
        )
    return RepairTime(down_after_s, repair_after_s, rebuild_s, source)
