"""Horizontal sharding: each exporter replica polls the jobs whose stable hash falls to it.

The kube-state-metrics pattern: a StatefulSet of M pods, pod N polls shard N. The hash must be
stable across processes and versions (Python's hash() is salted per process), so it is SHA-256
of `account/job_id`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

_ORDINAL = re.compile(r"-(\d+)$")


class ShardError(ValueError):
    """The shard settings cannot work; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Shard:
    index: int = 0
    total: int = 1

    def owns(self, account: str, job_id: str) -> bool:
        return self.total == 1 or shard_of(account, job_id, self.total) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def shard_of(account: str, job_id: str, total: int) -> int:
    digest = hashlib.sha256(f"{account}/{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % total


def resolve_shard(shard: int | str, total: int, environ: Mapping[str, str]) -> Shard:
    """`shard` is an index or "auto": the ordinal at the end of the pod name (POD_NAME, else
    HOSTNAME, which Kubernetes sets to the pod name), as StatefulSet pods are named `name-N`."""
    if total < 1:
        raise ShardError(f"total_shards must be at least 1, got {total}")
    if shard == "auto":
        pod = environ.get("POD_NAME") or environ.get("HOSTNAME") or ""
        match = _ORDINAL.search(pod)
        if match is None:
            raise ShardError(
                f"shard auto needs a StatefulSet pod name ending in -N in POD_NAME or HOSTNAME, "
                f"got {pod!r}"
            )
        index = int(match.group(1))
    elif isinstance(shard, int):
        index = shard
    else:
        raise ShardError(f"shard must be a number or 'auto', got {shard!r}")
    if not 0 <= index < total:
        raise ShardError(f"shard {index} is outside 0..{total - 1} (total_shards {total})")
    return Shard(index, total)
