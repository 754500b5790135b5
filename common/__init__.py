"""Code shared by every Shoal role: codec, checksums, placement, config, errors, RPC helpers.

Nothing here starts a daemon or holds daemon state; `shoal.common` imports no other Shoal
package except the generated `shoal.rpc` stubs.
"""
