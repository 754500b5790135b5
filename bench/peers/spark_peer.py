"""PySpark as a peer: `SparkSession.builder.master("local[2]")`, the UI off.

Its venv is bench/.peers-venv-spark (SHOAL_BENCH_PEERS_VENV_SPARK moves it), with pyspark
pinned below; it needs Java 17 or newer (JAVA_HOME's, else `java` on PATH, as PySpark looks),
and is skipped without it. bench/peers/spark_workloads.py measures the word count of
bench/wordcount.py only: the issue publishes no task figures for Spark (see
bench/peers/peer.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from bench.peers.peer import HERE, Peer

SPARK_VERSION = "4.3.0"
JAVA_NEEDED = 17


def java_missing() -> str:
    """Why PySpark cannot run here for want of Java, or "" when a recent enough one is there."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        return f"java not found (PySpark {SPARK_VERSION} needs Java {JAVA_NEEDED} or newer)"
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{java} -version failed: {exc}"
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        return f"cannot read the version of {java}"
    major = int(found[1]) if found[1] != "1" else int(found[2] or 0)  # "1.8.0" is Java 8
    if major < JAVA_NEEDED:
        return f"{java} is Java {major}; PySpark {SPARK_VERSION} needs {JAVA_NEEDED} or newer"
    return ""


SPARK = Peer(
    name="PySpark",
    key="spark",
    setup='SparkSession.builder.master("local[2]"), UI off, reduceByKey into 2 partitions',
    script="spark_workloads.py",
    requirements=(f"pyspark=={SPARK_VERSION}",),
    default_venv=HERE.parent / ".peers-venv-spark",
    venv_variable="SHOAL_BENCH_PEERS_VENV_SPARK",
    task_workloads=False,
    missing=java_missing,
)
