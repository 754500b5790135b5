"""Generated gRPC stubs for the Shoal wire protocol."""
