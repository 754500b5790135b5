"""`python -m shoal.coordinator` runs the coordinator daemon."""

from shoal.coordinator.main import main

raise SystemExit(main())
