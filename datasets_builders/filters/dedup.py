"""Dedup with datatrove's own stages: exact (hash of the whitespace-normalised text) and MinHash near dedup.

Exact: `ExactDedupSignature` per task -> `ExactFindDedups` (one task) -> `ExactDedupFilter` per task.
MinHash: `MinhashDedupSignature` per task -> `MinhashDedupBuckets` (one task per bucket) ->
`MinhashDedupCluster` (one task) -> `MinhashDedupFilter` per task. Shingles are word 5-grams of the code
(identifiers and keywords; datatrove's text normalisation first); the LSH bands and rows are chosen for
`threshold` the way datasketch does (least weighted false positive + negative probability), so
`--near-dup-threshold` keeps its meaning of a Jaccard similarity.

Which copy is kept: of exact duplicates, the one whose id hashes highest (a priority from the id, so the
choice does not depend on how documents were split into tasks); of a near-duplicate cluster, MinHash's
cluster root, which depends only on the documents' order, and readers keep one order for any task count.

`NearDuplicateIndex` is the same MinHash (datatrove's shingles and signatures, the same bands and rows) as an
in-memory index, for sets small enough to hold: a synthetic batch, a diversity sample. So "near duplicate"
means one thing in every builder and report.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig
from datatrove.utils.word_tokenizers import WordTokenizer

WORD = re.compile(r"\w+")
NUM_PERM = 128


class CodeWords(WordTokenizer):
    """Words of code for MinHash shingles: runs of word characters (identifiers, keywords, numbers)."""

    def __init__(self) -> None:
        super().__init__("code")

    def word_tokenize(self, text: str) -> list[str]:
        return WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return text.splitlines()

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in WORD.finditer(text)]


def normalized_text(doc: Document) -> str:
    """The text with trailing whitespace and blank lines removed (reformatting noise)."""
    return "\n".join(line for line in (raw.rstrip() for raw in doc.text.splitlines()) if line)


def id_priority(doc: Document) -> int:
    """1..65535 from the id: the exact-dedup tie-break that no task split can change."""
    return 1 + int(hashlib.sha1(doc.id.encode()).hexdigest()[:8], 16) % 65535


def lsh_bands(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band) for a Jaccard `threshold`, as datasketch's MinHashLSH picks them."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


@dataclass
class Dedup:
    """Folders and configs of one pipeline's exact + MinHash dedup; the methods build the stages' blocks."""

    work: Path
    threshold: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        bands, rows = lsh_bands(self.threshold)
        self.exact = ExactDedupConfig(content_getter=normalized_text, document_priority=id_priority,
                                      hash_config=HashConfig(precision=64, hash_fc="sha1"))
        # Numbers stay: in code they are part of what makes two files different.
        self.minhash = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows, seed=self.seed,
                                     hash_config=HashConfig(precision=64, hash_fc="sha1"),
                                     norm_config=TextNormConfig(norm_numbers=False))

    def path(self, name: str) -> str:
        return str(self.work / "dedup" / name)

    def exact_signature(self) -> ExactDedupSignature:
        return ExactDedupSignature(self.path("exact-sigs"), config=self.exact)

    def exact_find(self) -> ExactFindDedups:
        return ExactFindDedups(self.path("exact-sigs"), self.path("exact-dups"), config=self.exact)

    def exact_filter(self, exclusion_writer: DiskWriter | None = None) -> ExactDedupFilter:
        return ExactDedupFilter(self.path("exact-dups"), config=self.exact, exclusion_writer=exclusion_writer)

    def minhash_signature(self) -> MinhashDedupSignature:
        return MinhashDedupSignature(self.path("minhash-sigs"), config=self.minhash, language=CodeWords())

    def minhash_buckets(self) -> MinhashDedupBuckets:
        return MinhashDedupBuckets(self.path("minhash-sigs"), self.path("minhash-buckets"), config=self.minhash)

    def minhash_cluster(self) -> MinhashDedupCluster:
        return MinhashDedupCluster(self.path("minhash-buckets"), self.path("minhash-remove"), config=self.minhash)

    def minhash_filter(self, exclusion_writer: DiskWriter | None = None) -> MinhashDedupFilter:
        return MinhashDedupFilter(self.path("minhash-remove"), exclusion_writer=exclusion_writer)


class NearDuplicateIndex:
    """`seen(text)`: True when an earlier text shares a MinHash band with it (else the text is added)."""

    def __init__(self, threshold: float = 0.8, seed: int = 0):
        config = Dedup(Path("unused"), threshold, seed).minhash
        self.signer = MinhashDedupSignature("unused", config=config, language=CodeWords())  # opens no file
        self.bands: set[tuple[int, tuple[int, ...]]] = set()

    def seen(self, text: str) -> bool:
        shingles = self.signer.get_shingles(text)
        if shingles.size == 0:  # fewer words than a shingle: the whole text is the one shingle
            shingles = self.signer.get_shingles(" ".join([text] * self.signer.config.n_grams))
        keys = [(i, tuple(band)) for i, band in enumerate(self.signer.get_signature(shingles))]
        if any(key in self.bands for key in keys):
            return True
        self.bands.update(keys)
        return False
