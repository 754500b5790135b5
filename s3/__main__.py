"""`python -m shoal.s3` runs the S3 gateway daemon."""

from shoal.s3.main import main

raise SystemExit(main())
