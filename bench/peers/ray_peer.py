"""Ray as a peer: a local Ray, `ray.init(num_cpus=2, include_dashboard=False)`.

Its venv is bench/.peers-venv-ray (SHOAL_BENCH_PEERS_VENV_RAY moves it), with ray pinned
below; bench/peers/ray_workloads.py measures the no-op tasks/s and tiny-task round trips of
bench/tasks.py and the word count of bench/wordcount.py (see bench/peers/peer.py).
"""

from __future__ import annotations

from bench.peers.peer import HERE, Peer

RAY_VERSION = "2.60.0"

RAY = Peer(
    name="Ray",
    key="ray",
    setup="ray.init(num_cpus=2, include_dashboard=False)",
    script="ray_workloads.py",
    requirements=(f"ray=={RAY_VERSION}",),
    default_venv=HERE.parent / ".peers-venv-ray",
    venv_variable="SHOAL_BENCH_PEERS_VENV_RAY",
)
