"""The word count of bench/wordcount.py on PySpark, local mode.

    python spark_workloads.py --corpus DIR --counts OUT.json --only-wordcount

Runs inside the throwaway virtual environment bench/peers creates for PySpark (pyspark only:
this file imports nothing from Shoal) on `SparkSession.builder.master("local[2]")` with the UI
off (the session start and one small warm-up job that starts the Python workers are not in the
figure). The word count is the idiomatic RDD one, with the tokenizer of examples/wordcount.py
(workloads_common.py) and an in-mapper combine, one partition per file:

    sc.parallelize(paths, len(paths))
      .flatMap(lambda path: count_file(path).items())
      .reduceByKey(operator.add, sc.defaultParallelism)
      .collect()

`sc.defaultParallelism` is 2 on local[2] (spark.default.parallelism's default in local mode: the
cores). Without it PySpark's reduceByKey takes its parent's partition count, here one per file:
64 reduce tasks of ~80 words each, which cost this 2-core VM about 5 s more (16 s against 11 s,
the map side alone taking 10-11 s) and would measure the partitioning, not Spark.

Only the word count (the issue publishes no task figures for Spark): `--only-wordcount` is
required. Prints one JSON document; the word counts go to OUT.json so the caller can check them
against the counts known from generating the corpus.
"""

from __future__ import annotations

import operator
import os
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

import pyspark  # type: ignore[import-not-found]
from pyspark.sql import SparkSession  # type: ignore[import-not-found]

if TYPE_CHECKING:
    from bench.peers.workloads_common import corpus_paths, count_file, finish, noop, parse_args
else:  # run as a file in the peer's venv, with bench/peers on PYTHONPATH (bench/peers/peer.py)
    from workloads_common import corpus_paths, count_file, finish, noop, parse_args

MASTER = "local[2]"


def main() -> int:
    args = parse_args("PySpark's word count.")
    if not args.only_wordcount or args.skip_wordcount:
        raise SystemExit("spark_workloads.py runs the word count only: pass --only-wordcount")
    paths = corpus_paths(args.corpus)
    # The Python workers run on this venv's interpreter (PySpark would take `python3` from PATH).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    t0 = time.perf_counter()
    spark = (
        SparkSession.builder.master(MASTER)
        .appName("shoal-bench-wordcount")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.log.level", "ERROR")
        .getOrCreate()
    )
    try:
        sc = spark.sparkContext
        sc.setLogLevel("ERROR")
        start_s = time.perf_counter() - t0
        sc.parallelize(range(100), 2).map(noop).collect()  # warm: starts the Python workers
        reduce_partitions = sc.defaultParallelism
        t0 = time.perf_counter()
        pairs = (
            sc.parallelize(paths, len(paths))
            .flatMap(lambda path: count_file(path).items())
            .reduceByKey(operator.add, reduce_partitions)
            .collect()
        )
        wordcount_s = time.perf_counter() - t0
    finally:
        spark.stop()
    total: Counter[str] = Counter(dict(pairs))
    return finish(
        args.counts, total, version=pyspark.__version__, start_s=start_s, files=len(paths),
        wordcount_s=wordcount_s, reduce_partitions=reduce_partitions,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
