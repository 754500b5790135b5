"""`python -m bench.peers`: see bench/peers/side_by_side.py."""

from bench.peers.side_by_side import main

raise SystemExit(main())
