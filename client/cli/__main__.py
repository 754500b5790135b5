"""`python -m shoal.client.cli`: the same as the `clusterctl` console script."""

from shoal.client.cli.main import main

raise SystemExit(main())
