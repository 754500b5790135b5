"""Word count on a Shoal cluster: a map-reduce job over every object under a prefix.

    python examples/wordcount.py --coordinator ADDR --bucket B --prefix P \
        [--partitions 4] [--output BUCKET/PREFIX] [--generate MIB]

The mapper decodes an object's bytes as UTF-8 and splits the text into lowercase words; the
combiner (map side) and the reducer sum the counts. While the job runs a progress bar follows
`job.progress()` (a rich bar on a terminal, a plain line every few seconds otherwise); then the
top 10 words and the share of map tasks that ran on the host holding their input are printed.
`--generate MIB` first uploads a generated corpus under the prefix and checks the result
against a count computed locally.

The functions are importable (`examples/demo.py` and `bench/wordcount.py` reuse them). Workers
cannot import `examples`, so the module registers itself with cloudpickle to be sent by value.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

import cloudpickle

from shoal.client import AlreadyExists, Client, Job, JobStatus, ShoalError

if __name__ != "__main__":
    # Functions of __main__ travel by value anyway; an imported module would travel by reference.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

WORD = re.compile(r"\w+(?:'\w+)*")
"""A word: a run of letters, digits or underscores, with inner apostrophes (don't, o'clock)."""

PLAIN_PROGRESS_EVERY_S = 2.0


# The job's functions -------------------------------------------------------------------------


def count_words(text: str) -> Counter[str]:
    """Count the lowercase words of `text` (the tokenizer the mapper and the baselines share)."""
    return Counter(WORD.findall(text.lower()))


def mapper(key: str, data: bytes) -> Iterable[tuple[str, int]]:
    """Map one object to (word, count) pairs.

    The object is counted in place (an in-mapper combiner), so the job shuffles one pair per
    distinct word of the object rather than one `(word, 1)` per occurrence.
    """
    return count_words(data.decode("utf-8", errors="replace")).items()


def reducer(key: str, values: list[int]) -> int:
    """Sum the counts of one word (also the combiner: addition is associative)."""
    return sum(values)


# Running the job -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WordCountRun:
    """A finished word count: the counts, the job's final status and the elapsed seconds."""

    counts: Counter[str]
    status: JobStatus
    elapsed_s: float

    @property
    def local_ratio(self) -> float:
        """Map tasks that ran on the host holding their input, over all map tasks."""
        located = self.status.located_tasks
        return self.status.local_tasks / located if located else 0.0


def parse_output(output: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """'bucket/prefix' (or a (bucket, prefix) pair) as a pair; None stays None."""
    if output is None or isinstance(output, tuple):
        return output
    bucket, _, prefix = output.partition("/")
    return bucket, prefix


def submit_wordcount(
    client: Client,
    bucket: str,
    prefix: str,
    partitions: int = 4,
    output: str | tuple[str, str] | None = None,
) -> Job:
    """Submit the word count over every object under bucket/prefix; returns the job handle.

    With `output` ('bucket/prefix'), the reducers write JSON lines there (the bucket is created
    if missing); otherwise the results stay in Shoal's internal job bucket.
    """
    target = parse_output(output)
    if target is not None:
        with contextlib.suppress(AlreadyExists):
            client.create_bucket(target[0])
    return client.map_reduce(
        mapper,
        reducer,
        combiner=reducer,
        inputs=(bucket, prefix),
        partitions=partitions,
        output=target,
    )


def _describe(status: JobStatus) -> str:
    tasks = status.tasks
    total = sum(tasks.values())
    eta = f", eta {status.eta_s:.0f}s" if status.eta_s > 0 else ""
    return (
        f"{status.phase or status.state}: {tasks['succeeded']}/{total} tasks done, "
        f"{tasks['running']} running{eta}"
    )


def follow(job: Job, show_progress: bool = True, poll_s: float = 0.2) -> JobStatus:
    """Wait for the job, showing `job.progress()`: a rich bar on a TTY, plain lines otherwise."""
    if not show_progress:
        return job.wait()
    if sys.stdout.isatty():
        return _follow_rich(job, poll_s)
    return _follow_plain(job, poll_s)


def _follow_rich(job: Job, poll_s: float) -> JobStatus:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]word count[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("job", total=1.0, detail="submitted")
        while True:
            status = job.status()
            bar.update(task, completed=status.progress, detail=_describe(status))
            if status.done:
                return status
            time.sleep(poll_s)


def _follow_plain(job: Job, poll_s: float) -> JobStatus:
    last_line = 0.0
    last_phase = ""
    while True:
        status = job.status()
        now = time.monotonic()
        if status.done or status.phase != last_phase or now - last_line >= PLAIN_PROGRESS_EVERY_S:
            print(f"  {status.progress:6.1%}  {_describe(status)}", flush=True)
            last_line, last_phase = now, status.phase
        if status.done:
            return status
        time.sleep(poll_s)


def collect(job: Job) -> Counter[str]:
    """The job's (word, count) pairs as a Counter (raises JobFailed if the job failed)."""
    counts: Counter[str] = Counter()
    for word, count in job.result():
        counts[word] += count
    return counts


def run(
    client: Client,
    bucket: str,
    prefix: str,
    partitions: int = 4,
    output: str | tuple[str, str] | None = None,
    show_progress: bool = True,
) -> WordCountRun:
    """Submit, follow and collect a word count; also returns the job's status and timing."""
    started = time.perf_counter()
    job = submit_wordcount(client, bucket, prefix, partitions, output)
    try:
        status = follow(job, show_progress)
    except KeyboardInterrupt:
        job.cancel()  # Ctrl-C stops the job too, not only this script
        raise
    counts = collect(job)
    return WordCountRun(counts, status, time.perf_counter() - started)


def run_wordcount(
    client: Client,
    bucket: str,
    prefix: str,
    partitions: int = 4,
    output: str | tuple[str, str] | None = None,
    show_progress: bool = True,
) -> Counter[str]:
    """Count the words of every object under bucket/prefix with a Shoal map-reduce job."""
    return run(client, bucket, prefix, partitions, output, show_progress).counts


# A generated corpus ---------------------------------------------------------------------------

COMMON_TEXT = (
    "the of and to a in is it you that he was for on are with as i his they be at one have "
    "this from or had by not word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find don't it's o'clock café naïve über straße"
)
SYLLABLE_TEXT = "ka lo mi ne ru sa ti vo ze ba de fi go hu ja ke li mo nu pe"
VOCABULARY_SIZE = 5000
PARAGRAPHS = 4096
SENTENCES_PER_PARAGRAPH = (1, 7)
WORDS_PER_SENTENCE = (6, 18)


@cache
def vocabulary() -> tuple[str, ...]:
    """A fixed vocabulary: common English words first, then made-up two/three-syllable words."""
    words = list(dict.fromkeys(COMMON_TEXT.split()))
    seen = set(words)
    syllables = SYLLABLE_TEXT.split()
    for a in syllables:
        for b in syllables:
            for c in ("", *syllables):
                word = a + b + c
                if word not in seen:
                    seen.add(word)
                    words.append(word)
    return tuple(words[:VOCABULARY_SIZE])


@dataclass(frozen=True)
class ParagraphPool:
    """Paragraphs of words drawn from the vocabulary with Zipf weights (rank r weighs 1/r)."""

    paragraphs: tuple[str, ...]
    counts: tuple[Counter[str], ...]


@cache
def paragraph_pool(seed: int) -> ParagraphPool:
    """The corpus's paragraphs for `seed` (deterministic), each with its word counts."""
    words = vocabulary()
    cumulative = list(itertools.accumulate(1.0 / rank for rank in range(1, len(words) + 1)))
    rng = random.Random(seed)
    shape = [
        [rng.randint(*WORDS_PER_SENTENCE) for _ in range(rng.randint(*SENTENCES_PER_PARAGRAPH))]
        for _ in range(PARAGRAPHS)
    ]
    drawn = iter(rng.choices(words, cum_weights=cumulative, k=sum(map(sum, shape))))
    paragraphs = []
    for lengths in shape:
        sentences = []
        for length in lengths:
            sentence = list(itertools.islice(drawn, length))
            sentence[0] = sentence[0].capitalize()
            if length > 8 and rng.random() < 0.3:
                sentence[length // 2] += ","
            sentences.append(" ".join(sentence) + ".")
        paragraphs.append(" ".join(sentences) + "\n")
    return ParagraphPool(tuple(paragraphs), tuple(count_words(p) for p in paragraphs))


class Corpus:
    """A generated text corpus: `objects` objects of about total_bytes/objects bytes each.

    Each object is a deterministic sample (per seed and index) of paragraphs from a fixed pool,
    so hundreds of MiB generate in seconds, and the exact word counts follow from how often
    each paragraph was used, without counting the text.
    """

    def __init__(self, total_bytes: int, objects: int, seed: int = 0) -> None:
        if objects < 1 or total_bytes < 0:
            raise ValueError("a corpus needs objects >= 1 and total_bytes >= 0")
        self.total_bytes = total_bytes
        self.objects = objects
        self.seed = seed
        self._pool = paragraph_pool(seed)
        self._used: Counter[int] = Counter()

    def object(self, index: int) -> bytes:
        """The text of object `index` (UTF-8); counted in `expected()`."""
        pool = self._pool.paragraphs
        mean = sum(len(p.encode()) for p in pool) / len(pool)
        rng = random.Random(f"{self.seed}:{index}")
        size = self.total_bytes / self.objects
        picks = rng.choices(range(len(pool)), k=max(1, round(size / mean)))
        self._used.update(picks)
        return "".join([pool[i] for i in picks]).encode()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield (index, text) for every object."""
        for index in range(self.objects):
            yield index, self.object(index)

    def expected(self) -> Counter[str]:
        """The word counts of every object generated so far (each one once)."""
        counts: Counter[str] = Counter()
        for paragraph, times in self._used.items():
            for word, count in self._pool.counts[paragraph].items():
                counts[word] += count * times
        return counts


def object_key(prefix: str, index: int) -> str:
    """The key of generated object `index` under `prefix`."""
    return f"{prefix}part-{index:05d}.txt"


def generate_corpus(
    client: Client, bucket: str, prefix: str, total_bytes: int, objects: int, seed: int = 0
) -> Counter[str]:
    """Upload a generated text corpus under bucket/prefix (the bucket is created if missing);
    returns its word counts, computed locally."""
    with contextlib.suppress(AlreadyExists):
        client.create_bucket(bucket)
    corpus = Corpus(total_bytes, objects, seed)
    for index, text in corpus:
        client.put(bucket, object_key(prefix, index), text)
    return corpus.expected()


# Command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Count the words of every object under a prefix with a Shoal map-reduce job."
    )
    parser.add_argument(
        "--coordinator", default=None, help="HOST:PORT (default: SHOAL_COORDINATOR)"
    )
    parser.add_argument("--bucket", required=True, help="bucket holding the text objects")
    parser.add_argument("--prefix", default="", help="count every object under this key prefix")
    parser.add_argument("--partitions", type=int, default=4, help="reduce partitions")
    parser.add_argument("--output", default=None, help="BUCKET/PREFIX for the JSON lines output")
    parser.add_argument(
        "--generate", type=float, default=0.0, metavar="MIB",
        help="first upload a generated corpus of this many MiB (16 objects) and verify the counts",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        with Client(args.coordinator) as client:
            expected = None
            if args.generate > 0:
                size = int(args.generate * 1024 * 1024)
                print(f"uploading a generated corpus of {args.generate:g} MiB to {args.bucket}")
                expected = generate_corpus(client, args.bucket, args.prefix, size, 16)
            result = run(client, args.bucket, args.prefix, args.partitions, args.output)
    except ShoalError as exc:
        print(f"wordcount: {exc}", file=sys.stderr)
        return 1
    counts = result.counts
    print(
        f"\n{counts.total():,} words, {len(counts):,} distinct, in {result.elapsed_s:.1f}s "
        f"(job {result.status.job_id})"
    )
    width = max((len(word) for word, _ in counts.most_common(10)), default=4)
    for rank, (word, count) in enumerate(counts.most_common(10), 1):
        print(f"{rank:>3}. {word:<{width}}  {count:>12,}")
    status = result.status
    print(
        f"local map tasks: {status.local_tasks}/{status.located_tasks} "
        f"({result.local_ratio:.0%} ran on the host holding their input)"
    )
    if expected is not None:
        same = counts == expected
        print(f"matches the locally computed counts: {'YES' if same else 'NO'}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
