"""Step 3: near-duplicate removal with MinHash over each notebook's code.

datatrove's own MinHash dedup is four stages that exchange signature files on disk (sign,
bucket, cluster, filter): right for billions of web pages, heavy for a pipeline whose shards
hold thousands of notebooks. This step does the same computation in memory, in one pass:
the same `MinhashConfig` (n-grams, buckets x hashes per bucket, seed) and the same universal
hash permutations, with LSH buckets kept in dictionaries. The first notebook of a cluster is
kept; later ones whose signatures share a bucket and whose estimated Jaccard similarity
reaches `threshold` are dropped.

Scope: the index lives in one task, so duplicates are found within a shard. Run the dedup
step with `tasks: 1` (the default) for a global pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from .notebook import NotebookError, code_text, notebook_of

_MERSENNE = np.uint64((1 << 61) - 1)
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d+)?|[^\w\s]")
_COMMENT = re.compile(r"#[^\n]*")


@dataclass
class DedupConfig:
    n_grams: int = 5               # tokens per shingle
    num_buckets: int = 14          # LSH bands
    hashes_per_bucket: int = 8     # rows per band
    threshold: float = 0.7         # estimated Jaccard similarity to call two notebooks duplicates
    seed: int = 1
    strip_comments: bool = True


def code_tokens(code: str, strip_comments: bool = True) -> list[str]:
    if strip_comments:
        code = _COMMENT.sub("", code)
    return _TOKEN.findall(code.lower())


class MinHasher:
    """Signatures of token n-gram sets under `num_buckets * hashes_per_bucket` permutations."""

    def __init__(self, config: DedupConfig):
        self.config = config
        n = config.num_buckets * config.hashes_per_bucket
        gen = np.random.RandomState(config.seed)
        self.a = gen.randint(1, _MERSENNE, dtype=np.uint64, size=(1, n))
        self.b = gen.randint(0, _MERSENNE, dtype=np.uint64, size=(1, n))

    def shingles(self, code: str) -> np.ndarray:
        toks = code_tokens(code, self.config.strip_comments)
        k = self.config.n_grams
        grams = {" ".join(toks[i:i + k]) for i in range(max(1, len(toks) - k + 1))}
        return np.fromiter((xxhash.xxh64_intdigest(g.encode()) for g in grams), dtype=np.uint64, count=len(grams)).reshape(-1, 1)

    def signature(self, code: str) -> np.ndarray:
        sh = self.shingles(code)
        return ((sh * self.a + self.b) % _MERSENNE).min(axis=0)

    def bands(self, sig: np.ndarray) -> list[bytes]:
        r = self.config.hashes_per_bucket
        return [sig[i * r:(i + 1) * r].tobytes() for i in range(self.config.num_buckets)]


class MinhashNotebookDedup(PipelineStep):
    type = "🫂 - DEDUP"
    name = "minhash over code"

    def __init__(self, config: DedupConfig | None = None):
        super().__init__()
        self.config = config or DedupConfig()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        hasher = MinHasher(self.config)
        buckets: list[dict[bytes, int]] = [{} for _ in range(self.config.num_buckets)]
        kept: list[np.ndarray] = []
        kept_ids: list[str] = []
        for doc in data or []:
            self.stat_update("total")
            with self.track_time():
                try:
                    sig = hasher.signature(code_text(notebook_of(doc)))
                except NotebookError as e:
                    self.stat_update("dropped", f"dropped_{e.reason}")
                    continue
                bands = hasher.bands(sig)
                dup = None
                for table, band in zip(buckets, bands):
                    j = table.get(band)
                    if j is not None and float(np.mean(kept[j] == sig)) >= self.config.threshold:
                        dup = j
                        break
            if dup is not None:
                self.stat_update("dropped", "dropped_near_duplicate")
                logger.debug(f"{doc.id} is a near-duplicate of {kept_ids[dup]}")
                continue
            idx = len(kept)
            kept.append(sig)
            kept_ids.append(doc.id)
            for table, band in zip(buckets, bands):
                table.setdefault(band, idx)
            self.stat_update("forwarded")
            yield doc
