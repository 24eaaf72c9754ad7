"""The embedder as a datatrove block: batched forward passes on `--device`, vectors attached to documents.

`Embed` reads `batch` documents at a time, embeds their text with `datasets_builders.embedder.Embedder`
(mean-pooled hidden states; cached on disk by text hash, so the fit and score stages never embed a file
twice) and stores the vector under `EMBEDDING` in the metadata, for the next block (the classifier's fit
or the quality score) to pop before anything is written.
"""

from __future__ import annotations

import ctypes
import functools
import os

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

EMBEDDING = "_embedding"


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's initial default, held fixed


@functools.cache
def _libc() -> object | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


@functools.cache
def fix_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at 128 KB (once per process; a no-op elsewhere).

    glibc raises the threshold (up to 32 MB) each time a large block is freed, so after the first forward pass the
    activations (MBs each) come from the heap instead of mmap, and the heap, pinned by small live objects between
    them, grows with every chunk: the score stage's peak rose with the corpus. Measured (synthetic corpus, 1 task,
    score stage VmHWM): 500 files 784 -> 701 MB, 2,000 files 856 -> 732 MB with the threshold held; no slowdown.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim_heap() -> None:
    """Hand the heap pages malloc keeps after frees back to the OS (glibc's `malloc_trim`; a no-op elsewhere).

    Each chunk's token ids, activations and vectors are freed, but between them live small objects (the
    documents read meanwhile, SQLite pages, stats), so glibc keeps the freed memory in a fragmented heap and the
    process grows ~100 KB a document: measured on the score stage, 2,000 synthetic files, VmRSS 738 -> 906 MB
    after 1,280 files without this, 620 -> 633 MB with it, the peak flat at ~800 MB. Live data does not grow.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class Embed(PipelineStep):
    """Attach an L2-normalised embedding of each document's text (see the module docstring)."""

    type = "🔢 - EMBED"
    name = "embed"

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 128,
                 max_length: int | None = None, cache_dir: str | os.PathLike | None = None, chunk: int = 256,
                 precision: str = "auto", max_batch_tokens: int = 8192):
        super().__init__()
        self.options = dict(model=model, device=device, batch_size=batch_size, max_length=max_length,
                            cache_dir=cache_dir, precision=precision, max_batch_tokens=max_batch_tokens)
        self.chunk = chunk
        self._embedder = None

    @property
    def embedder(self):
        if self._embedder is None:  # built in the task, not pickled with the pipeline
            from ..embedder import Embedder

            self._embedder = Embedder(**self.options)
        return self._embedder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.batching import batched

        fix_mmap_threshold()  # bounded memory: see fix_mmap_threshold
        for batch in batched(data, self.chunk):
            with self.track_time("batch"):
                vectors = self.embedder.embed([doc.text for doc in batch])
            for doc, vector in zip(batch, vectors):
                doc.metadata[EMBEDDING] = vector
                self.stat_update("embedded")
                yield doc
            del vectors
            trim_heap()  # bounded memory: see trim_heap
        if self._embedder is not None:
            for key, value in self._embedder.stats.items():
                self.stat_update(f"embedder_{key}", value=value)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_embedder": None}
