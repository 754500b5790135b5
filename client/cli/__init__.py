"""`clusterctl`: the operator command line."""
