"""`python -m shoal.storage_node` runs the storage node daemon."""

from shoal.storage_node.main import main

raise SystemExit(main())
