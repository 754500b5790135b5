"""Dask distributed as a peer: LocalCluster(n_workers=2, threads_per_worker=1).

Its venv is bench/.peers-venv (SHOAL_BENCH_PEERS_VENV moves it), with dask and distributed
pinned below; bench/peers/dask_workloads.py measures the no-op tasks/s and tiny-task round
trips of bench/tasks.py and the word count of bench/wordcount.py (see bench/peers/peer.py for
how a peer is set up and run, bench/peers/side_by_side.py for the peers part).
"""

from __future__ import annotations

from bench.peers.peer import HERE, Peer

DASK_VERSION = "2026.8.0"

DASK = Peer(
    name="Dask",
    key="dask",
    setup="LocalCluster(n_workers=2, threads_per_worker=1)",
    script="dask_workloads.py",
    requirements=(f"dask=={DASK_VERSION}", f"distributed=={DASK_VERSION}"),
    default_venv=HERE.parent / ".peers-venv",
    venv_variable="SHOAL_BENCH_PEERS_VENV",
)
