"""`python -m bench.peers`: see bench/peers/dask_peer.py."""

from bench.peers.dask_peer import main

raise SystemExit(main())
