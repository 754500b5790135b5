"""`clusterctl durability`: the annual chance of losing a stripe, in nines, beside n/k.

The model (independent node failures, first order in failure rate x repair time) is in
shoal.common.durability and docs/durability.md. Inputs not given on the command line come from
the cluster's status: the default redundancy, the live node count, the stored stripes, and the
repair time: down-after + repair-after + the time to rebuild one node's shards, measured over
recent repairs when the coordinator has any, else from repair-bandwidth. The coordinator is
not contacted when --k, --n, --nodes and --repair-hours are all given.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from shoal.client.cli.address import open_client
from shoal.common.durability import (
    REPAIR_GIVEN,
    REPAIR_MEASURED,
    Estimate,
    RepairTime,
    check_afr,
    check_repair_hours,
    estimate,
    repair_time,
)
from shoal.common.erasure import check_redundancy
from shoal.common.units import format_bytes, format_duration

DEFAULT_AFR = 0.02
# Nodes that hold and receive shards; down, draining and decommissioned ones do not count.
LIVE_STATES = ("up", "suspect")
# Above this many expected failures per node per repair window the first-order model is rough.
ROUGH_AT = 0.1


@dataclass(frozen=True)
class Inputs:
    """The model's inputs and where the repair time came from."""

    k: int
    n: int
    nodes: int
    stripes: int
    repair: RepairTime
    # For the human view of a measured or configured repair time.
    node_shards: float = 0.0
    node_bytes: float = 0.0
    mean_rebuild_s: float = 0.0
    repair_concurrency: int = 0
    repair_bandwidth: int = 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _inputs(args: argparse.Namespace, status: dict[str, Any] | None) -> Inputs:
    """Combine the command line with the status (None when everything was given)."""
    default = status["default_redundancy"] if status else {}
    k: int = args.k if args.k is not None else int(default["k"])
    n: int = args.n if args.n is not None else int(default["n"])
    check_redundancy(k, n)
    live = [node for node in status["nodes"] if node["state"] in LIVE_STATES] if status else []
    nodes: int = args.nodes if args.nodes is not None else len(live)
    stripes: int = args.stripes if args.stripes is not None else 0
    if args.stripes is None and status:
        stripes = sum(int(c) for c in status["stripes_by_healthy_shards"].values())
    if args.repair_hours is not None:
        repair = RepairTime(0.0, 0.0, args.repair_hours * 3600.0, REPAIR_GIVEN)
        return Inputs(k, n, nodes, stripes, repair)
    assert status is not None
    timings, mean_rebuild_s = status["timings"], float(status["repair"]["mean_rebuild_s"])
    node_shards = _mean([float(node["shards"]) for node in live])
    node_bytes = _mean([float(node["used_bytes"]) for node in live])
    concurrency = int(timings.get("repair_concurrency", 0))
    bandwidth = int(timings.get("repair_bandwidth_bytes_s", 0))
    repair = repair_time(
        k=k,
        down_after_s=float(timings["down_after_s"]),
        repair_after_s=float(timings["repair_after_s"]),
        node_shards=node_shards,
        node_bytes=node_bytes,
        mean_rebuild_s=mean_rebuild_s,
        repair_concurrency=concurrency,
        repair_bandwidth=bandwidth,
    )
    return Inputs(
        k,
        n,
        nodes,
        stripes,
        repair,
        node_shards=node_shards,
        node_bytes=node_bytes,
        mean_rebuild_s=mean_rebuild_s,
        repair_concurrency=concurrency,
        repair_bandwidth=bandwidth,
    )


def _repair_rows(inputs: Inputs) -> list[tuple[str, str]]:
    """The repair time, its source and (unless given) how it adds up."""
    repair = inputs.repair
    if repair.source == REPAIR_GIVEN:
        return [("repair time", f"{repair.hours:.2f} h, given (--repair-hours)")]
    sum_up = (
        f"{format_duration(repair.detect_s)} down-after + {format_duration(repair.wait_s)} "
        f"repair-after + {format_duration(repair.rebuild_s)} rebuild"
    )
    bandwidth = (
        f"{format_bytes(inputs.node_bytes)} per node x k={inputs.k} (shards read per shard "
        f"rebuilt) / {format_bytes(inputs.repair_bandwidth)}/s repair-bandwidth"
    )
    rebuild = bandwidth
    if repair.source == REPAIR_MEASURED:
        measured = (
            f"{inputs.node_shards:.0f} shards per node x {inputs.mean_rebuild_s:.3g}s / "
            f"{inputs.repair_concurrency} at once"
        )
        bound = repair.rebuild_s > inputs.node_shards * inputs.mean_rebuild_s / max(
            inputs.repair_concurrency, 1
        )
        rebuild = f"{bandwidth} (slower than the measured {measured})" if bound else measured
    return [
        ("repair time", f"{repair.hours:.2f} h, {repair.source}"),
        ("", f"= {sum_up}"),
        ("", f"rebuild: {rebuild}"),
    ]


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count != 1 else ''}"


def _loss(probability: float, nines: float) -> str:
    return f"{probability:.2g} per year = {nines:.1f} nines"


def _replication(inputs: Inputs, afr: float) -> Estimate | None:
    """3x replication on the same nodes with the same repair time, for comparison."""
    if (inputs.k, inputs.n) == (1, 3) or inputs.nodes < 3:
        return None
    return estimate(
        1, 3, nodes=inputs.nodes, afr=afr, repair_hours=inputs.repair.hours, stripes=inputs.stripes
    )


def _as_dict(result: Estimate) -> dict[str, Any]:
    return {
        "k": result.k,
        "n": result.n,
        "overhead": round(result.overhead, 4),
        "tolerates": result.tolerates,
        "stripe": {"loss_per_year": result.stripe_loss_per_year, "nines": result.stripe_nines},
        "any_stripe": {"loss_per_year": result.any_loss_per_year, "nines": result.any_nines}
        if result.any_nines is not None
        else None,
    }


def _to_json(inputs: Inputs, result: Estimate, replication: Estimate | None) -> dict[str, Any]:
    repair = inputs.repair
    return {
        **_as_dict(result),
        "nodes": result.nodes,
        "afr": result.afr,
        "stripes": result.stripes,
        "repair": {
            "hours": repair.hours,
            "source": repair.source,
            # The parts of a measured or configured repair time (null when given).
            **{
                key: None if repair.source == REPAIR_GIVEN else round(value, 3)
                for key, value in (
                    ("down_after_s", repair.detect_s),
                    ("repair_after_s", repair.wait_s),
                    ("rebuild_s", repair.rebuild_s),
                )
            },
        },
        "failures_per_repair": result.failures_per_repair,
        "replication_3x": _as_dict(replication) if replication else None,
    }


def _print(inputs: Inputs, result: Estimate, replication: Estimate | None) -> None:
    rows = [
        ("k, n", f"{result.k}, {result.n} (survives any {_nodes(result.tolerates)} lost at once)"),
        ("overhead", f"{result.overhead:.2f}x (n/k raw bytes per byte stored)"),
        ("nodes", str(result.nodes)),
        ("node AFR", f"{result.afr * 100:.3g}% per node per year, failures independent"),
        *_repair_rows(inputs),
        ("stripe loss", _loss(result.stripe_loss_per_year, result.stripe_nines)),
    ]
    if result.any_loss_per_year is not None and result.any_nines is not None:
        loss = _loss(result.any_loss_per_year, result.any_nines)
        plural = "s" if result.stripes != 1 else ""
        rows.append(("cluster loss", f"{loss} (any of {result.stripes} stripe{plural})"))
    if replication:
        loss = _loss(replication.stripe_loss_per_year, replication.stripe_nines)
        rows.append(("3x replication", f"stripe loss {loss}, overhead 3.00x (k=1, n=3)"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if result.failures_per_repair > ROUGH_AT:
        print(
            f"note: a node fails {result.failures_per_repair:.2g} times per repair window on "
            f"average; the first-order model is rough above {ROUGH_AT}"
        )
    print("model: independent node failures, no correlated or zone failures (docs/durability.md)")


def cmd_durability(args: argparse.Namespace) -> int:
    """Estimate the annual probability of losing a stripe; exit 0, or 1 on invalid input."""
    afr: float = args.afr
    check_afr(afr)
    if args.k is not None and args.n is not None:
        check_redundancy(args.k, args.n)
    if args.repair_hours is not None:
        check_repair_hours(args.repair_hours)
    status: dict[str, Any] | None = None
    given = (args.k, args.n, args.nodes, args.repair_hours)
    if any(value is None for value in given):
        with open_client(args) as client:
            status = client.status()
    inputs = _inputs(args, status)
    result = estimate(
        inputs.k,
        inputs.n,
        nodes=inputs.nodes,
        afr=afr,
        repair_hours=inputs.repair.hours,
        stripes=inputs.stripes,
    )
    replication = _replication(inputs, afr)
    if args.json:
        print(json.dumps(_to_json(inputs, result, replication), indent=2))
    else:
        _print(inputs, result, replication)
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the durability subcommand to `sub`."""
    parser = sub.add_parser(
        "durability",
        parents=[common],
        help="estimate the annual chance of losing a stripe (nines) and the overhead n/k",
        description="Estimate the annual probability of losing a stripe, in nines, from k, n, "
        "the node count, a node annual failure rate and the cluster's repair time "
        "(model and assumptions: docs/durability.md).",
    )
    parser.add_argument(
        "--afr",
        type=float,
        default=DEFAULT_AFR,
        metavar="P",
        help=f"annual failure rate of a node, 0 < P < 1 (default: {DEFAULT_AFR})",
    )
    parser.add_argument(
        "--k", type=int, metavar="K", help="data shards (default: the cluster's default)"
    )
    parser.add_argument(
        "--n", type=int, metavar="N", help="total shards (default: the cluster's default)"
    )
    parser.add_argument(
        "--nodes", type=int, metavar="N", help="storage nodes (default: the live nodes)"
    )
    parser.add_argument(
        "--repair-hours",
        type=float,
        metavar="H",
        help="hours a failed node's shards stay missing (default: down-after + repair-after "
        "+ rebuild time, measured over recent repairs, else from repair-bandwidth)",
    )
    parser.add_argument(
        "--stripes",
        type=int,
        metavar="S",
        help="stripes stored, for the cluster-wide figure (default: the cluster's; none "
        "when the coordinator is not asked)",
    )
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    parser.set_defaults(handler=cmd_durability)
