"""How the predecessor (hpc_pytorch_loader) described a converted dataset, for its users' scripts.

Its readers and converters had attributes that scripts read: ``len`` (samples), ``images_per_file``,
``total_num_arrays`` (files of each kind: our shards) and ``len_last_array``. Our readers and
converters compute them from the manifest (or, before a conversion, from the source's candidates)
with the predecessor's meaning, including its one quirk: ``len_last_array`` is 0 when the last shard
is full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ShardCounts:
    samples: tuple[int, ...]  # per shard, in order
    images_per_file: int

    @classmethod
    def planned(cls, num_candidates: int, images_per_file: int) -> "ShardCounts":
        """Before a conversion: every candidate kept, shard k = candidates [k·N, (k+1)·N)."""
        full, rest = divmod(num_candidates, images_per_file)
        return cls((images_per_file,) * full + ((rest,) if rest else ()), images_per_file)

    @classmethod
    def of_manifest(cls, manifest: Any) -> "ShardCounts":
        """What a written dataset holds (skipped inputs make shards shorter)."""
        samples = tuple(shard.num_samples for shard in manifest.shards)
        recorded = manifest.settings.get("images_per_file") or (manifest.plan or {}).get("images_per_file")
        return cls(samples, int(recorded or max(samples, default=0)))

    @property
    def num_samples(self) -> int:
        return sum(self.samples)

    @property
    def total_num_arrays(self) -> int:
        return len(self.samples)

    @property
    def len_last_array(self) -> int:
        """Samples in the last shard, or 0 when it holds ``images_per_file`` (the predecessor's rule)."""
        last = self.samples[-1] if self.samples else 0
        return 0 if last == self.images_per_file else last
