"""`python -m shoal.worker` runs the worker daemon."""

from shoal.worker.main import main

raise SystemExit(main())
