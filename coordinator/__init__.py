"""The coordinator daemon (`shoal-coordinator`): metadata, membership and placement."""
