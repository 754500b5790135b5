"""The storage node daemon (`shoal-node`): durable, checksummed shard storage over gRPC."""
