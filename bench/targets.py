"""Issue 6's published peer figures and its targets, checked against one run of the suite.

The peer figures were measured by the issue's author on this kind of machine (2 cores), not by
this suite; they are constants here. Where the issue gives a range, the end that is harder for
Shoal to beat is used (e.g. Ray's 1,200-1,500 tasks/s counts as 1,500) and the range is shown.
The issue gives rates in "MB/s of object data"; they are compared with Shoal's MiB/s as if
they were MiB/s, the reading that is harder for Shoal (by 4.9%).

Targets that have a same-run counterpart (the in-process ceiling, Pool(2), the healthy get for
the degraded one, and Dask, Ray and PySpark when bench/peers measured them: `python -m bench`
does unless `--no-peers`) use the figure measured in the same run; a peer target whose peer was
not measured (skipped, failed, or not asked for) falls back to the published figure.

The issue's task targets: no-op tasks/s at least Ray's, tiny-task round trip p50 under Dask's,
and the word count faster than all three of Dask, Ray and PySpark (local) and within 1.3x of
multiprocessing.Pool(2) reading the same bytes from local files. Pool(2) is only that 1.3x
reference: its published 7-9 s is shown, never a target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.common import fmt

MET = "target met"
MISSED = "MISSED"
UNMEASURED = "not measured"
PUBLISHED_CORPUS_MIB = 256


@dataclass(frozen=True)
class Published:
    """One published figure of a peer system (issue 6)."""

    system: str
    metric: str
    value: float
    unit: str
    shown: str = ""  # the figure as published, when it is a range

    def label(self) -> str:
        return self.shown or f"{self.value:,g}"


TAHOE = "Tahoe-LAFS 1.20 4-of-6"
SWIFT = "OpenStack Swift 2.30 EC 4+2"
ZFEC = "zfec 4/6 + 6 fsynced files, in-process"
DASK = "Dask distributed"
RAY = "Ray"
SPARK = "PySpark local"
POOL = "multiprocessing.Pool(2)"

PUBLISHED: list[Published] = [
    *(
        Published(system, f"{op} {size}", value, "MiB/s")
        for system, figures in (
            (TAHOE, {"put": (16, 46, 61), "get": (26, 44, 47)}),
            (SWIFT, {"put": (29, 104, 122), "get": (37, 156, 181)}),
            (ZFEC, {"put": (269, 444, 276), "get": (1029, 949, 800)}),
        )
        for op, values in figures.items()
        for size, value in zip(("1 MiB", "16 MiB", "64 MiB"), values, strict=True)
    ),
    *(
        Published(system, f"4 KiB {op}, {callers} caller{'s' if callers > 1 else ''}", v, "ops/s")
        for system, figures in (
            (TAHOE, {"puts": (18, 25), "gets": (27, 44)}),
            (SWIFT, {"puts": (32, 37), "gets": (66, 86)}),
            (ZFEC, {"puts": (281, 1076), "gets": (19397, 7076)}),
        )
        for op, values in figures.items()
        for callers, v in zip((1, 8), values, strict=True)
    ),
    Published(DASK, "no-op tasks", 460, "tasks/s", "about 460"),
    Published(DASK, "tiny-task round trip", 11, "ms"),
    Published(DASK, "word count 256 MiB", 10, "s", "10-15"),
    Published(RAY, "no-op tasks", 1500, "tasks/s", "1,200-1,500"),
    Published(RAY, "tiny-task round trip", 2, "ms"),
    Published(RAY, "word count 256 MiB", 8, "s", "8-11"),
    Published(SPARK, "word count 256 MiB", 13, "s", "13-18"),
    Published(POOL, "word count 256 MiB", 7, "s", "7-9"),
]


def published(system: str, metric: str) -> Published:
    return next(p for p in PUBLISHED if p.system == system and p.metric == metric)


@dataclass(frozen=True)
class Target:
    """Shoal's figure `key` must be `op` (">=", "<", "<=") `factor` x a reference figure.

    The reference is the same-run figure `reference_key` when present (and measured), else the
    published figure `peer`. `needs_corpus` marks word-count targets against published figures,
    which only compare at the published corpus size.
    """

    what: str
    key: str
    unit: str
    op: str
    factor: float
    peer: Published | None = None
    reference_key: str = ""
    reference_name: str = ""
    limit: float | None = None  # an absolute bound (no reference)
    needs_corpus: bool = False


def _targets() -> list[Target]:
    swift_put, tahoe_put = published(SWIFT, "put 64 MiB"), published(TAHOE, "put 64 MiB")
    swift_get, tahoe_get = published(SWIFT, "get 64 MiB"), published(TAHOE, "get 64 MiB")
    ops = {
        (op, system): published(system, f"4 KiB {op}, 8 callers")
        for op in ("puts", "gets")
        for system in (SWIFT, TAHOE)
    }
    ray_tasks, dask_trip = published(RAY, "no-op tasks"), published(DASK, "tiny-task round trip")
    dask_count, ray_count, spark_count = (
        published(system, "word count 256 MiB") for system in (DASK, RAY, SPARK)
    )
    ceiling = "in-process ceiling, same run"
    put, get = "put 64 MiB, 1 client", "get 64 MiB"
    small_put, small_get = "put 4 KiB, 8 callers", "get 4 KiB, 8 callers"
    count, trip, degraded = "word count", "tiny-task round trip p50", "get 64 MiB, 2 nodes stopped"
    noop = "no-op tasks, 2 workers"
    dask, ray, spark = "Dask, same run", "Ray, same run", "PySpark local, same run"
    pool, healthy = "Pool(2) on local files", "healthy get just before"
    return [
        Target(put, "put_64mib", "MiB/s", ">=", 2, swift_put),
        Target(put, "put_64mib", "MiB/s", ">=", 4, tahoe_put),
        Target(put, "put_64mib", "MiB/s", ">=", 0.6, None, "ceiling_put_64mib", ceiling),
        Target(get, "get_64mib", "MiB/s", ">=", 2.5, swift_get),
        Target(get, "get_64mib", "MiB/s", ">=", 8, tahoe_get),
        Target(get, "get_64mib", "MiB/s", ">=", 0.5, None, "ceiling_get_64mib", ceiling),
        Target(small_put, "put_4kib_8_ops", "ops/s", ">=", 10, ops["puts", SWIFT]),
        Target(small_put, "put_4kib_8_ops", "ops/s", ">=", 15, ops["puts", TAHOE]),
        Target(small_get, "get_4kib_8_ops", "ops/s", ">=", 10, ops["gets", SWIFT]),
        Target(small_get, "get_4kib_8_ops", "ops/s", ">=", 15, ops["gets", TAHOE]),
        Target(
            degraded, "degraded_get_64mib", "MiB/s", ">=", 0.7, None, "healthy_get_64mib", healthy
        ),
        Target("client peak RSS, 1 GiB put + get", "client_rss_mib", "MiB", "<", 1, limit=200),
        Target(noop, "noop_tasks_s", "tasks/s", ">=", 1, ray_tasks, "ray_noop_tasks_s", ray),
        Target(trip, "roundtrip_p50_ms", "ms", "<", 1, dask_trip, "dask_roundtrip_p50_ms", dask),
        Target(count, "wordcount_s", "s", "<", 1, dask_count, "dask_wordcount_s", dask, None, True),
        Target(count, "wordcount_s", "s", "<", 1, ray_count, "ray_wordcount_s", ray, None, True),
        Target(
            count, "wordcount_s", "s", "<", 1, spark_count, "spark_wordcount_s", spark, None, True
        ),
        Target(count, "wordcount_s", "s", "<=", 1.3, None, "pool_wordcount_s", pool),
    ]


TARGETS = _targets()


@dataclass(frozen=True)
class Verdict:
    """One target checked against a run."""

    what: str
    unit: str
    shoal: float | None
    needed: str
    bound: float | None
    verdict: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio_text(factor: float, op: str, name: str) -> str:
    if factor == 1:
        return {"<": f"under {name}", "<=": f"at most {name}", ">=": f"at least {name}"}[op]
    return f"{op} {factor:g}x {name}"


def check(target: Target, figures: dict[str, float]) -> Verdict:
    """Check one target against the figures of a run."""
    shoal = figures.get(target.key)
    note = ""
    if target.limit is not None:
        bound, needed = target.limit, f"{target.op} {target.limit:g} {target.unit}"
        if target.key == "client_rss_mib":
            size = figures.get("client_rss_object_mib")
            if size is not None and size != 1024:
                note = f"measured with {size:g} MiB, not 1 GiB (run the default or --full)"
    elif target.reference_key and target.reference_key in figures:
        reference = figures[target.reference_key]
        bound = target.factor * reference
        name = f"{target.reference_name} ({fmt(reference)})"
        needed = _ratio_text(target.factor, target.op, name)
    elif target.peer is not None:
        reference = target.peer.value
        bound = target.factor * reference
        name = f"{target.peer.system} ({target.peer.label()}, published)"
        needed = _ratio_text(target.factor, target.op, name)
        corpus = figures.get("wordcount_mib")
        if target.needs_corpus and corpus is not None and abs(corpus - PUBLISHED_CORPUS_MIB) > 1:
            note = f"corpus {corpus:.0f} MiB; the published figure is for 256 MiB"
    else:
        needed = _ratio_text(target.factor, target.op, target.reference_name)
        return Verdict(target.what, target.unit, shoal, needed, None, UNMEASURED)
    if shoal is None:
        return Verdict(target.what, target.unit, None, needed, bound, UNMEASURED, note)
    ok = {">=": shoal >= bound, "<": shoal < bound, "<=": shoal <= bound}[target.op]
    verdict = MET if ok else MISSED
    if note:
        verdict += " (not comparable)"
    return Verdict(target.what, target.unit, shoal, needed, bound, verdict, note)


def check_all(figures: dict[str, float]) -> list[Verdict]:
    return [check(target, figures) for target in TARGETS]


def machine_speed_lines(figures: dict[str, float]) -> list[str]:
    """How fast this run's machine was next to the one the published storage figures came from.

    The issue published its in-process ceiling (zfec + fsynced shard files, no network) beside
    the peers' figures, and the suite measures the same ceiling in every run, so their ratio
    says how much slower or faster this machine ran than when the peers were measured. The
    targets against published figures are shown scaled by it, for context only: the verdicts
    above use the published figures as they are.
    """
    lines = []
    for op, swift_factor in (("put", 2.0), ("get", 2.5)):
        ceiling = figures.get(f"ceiling_{op}_64mib")
        if not ceiling:
            continue
        published_ceiling = published(ZFEC, f"{op} 64 MiB").value
        speed = ceiling / published_ceiling
        swift = published(SWIFT, f"{op} 64 MiB").value
        tahoe = published(TAHOE, f"{op} 64 MiB").value
        tahoe_factor = 4.0 if op == "put" else 8.0
        needed = max(swift_factor * swift, tahoe_factor * tahoe) * speed
        shoal = figures.get(f"{op}_64mib")
        reading = "" if shoal is None else f"; Shoal {shoal:,.0f}"
        lines.append(
            f"  {op} 64 MiB: in-process ceiling {ceiling:,.0f} MiB/s here, {published_ceiling:,.0f}"
            f" published: this machine ran at {speed:.2f}x; the peer targets scaled by it: "
            f">= {needed:,.0f} MiB/s{reading}"
        )
    if not lines:
        return []
    return [
        "machine speed (context, not a verdict): the published ceiling next to this run's",
        *lines,
    ]
