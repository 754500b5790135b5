"""Shoal's benchmark suite (`python -m bench`, see bench/README.md).

Every bench program is one of Shoal's own tools, so its processes tune glibc's malloc as the
daemons do (`shoal.common.malloc_tuning`; SHOAL_MALLOC_TUNING=0 turns it off): the client
figures are those of clusterctl and the S3 gateway, not of a user program that did not opt in.
"""

from shoal.common import malloc_tuning

malloc_tuning.tune_own_process()
