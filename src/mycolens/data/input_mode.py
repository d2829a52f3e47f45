"""The one place that decides whether a data module holds its splits in memory or streams them."""

from __future__ import annotations

import logging

from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


def should_stream(decoded_bytes: dict[str, int], cache_max_gb: float | None) -> bool:
    """True when the splits' decoded size exceeds data.cache_max_gb (None: never stream); logs the choice once
    (on the first process of a DDP group)."""
    total = sum(decoded_bytes.values())
    stream = cache_max_gb is not None and total > float(cache_max_gb) * 1e9
    if rank_zero_only.rank != 0:
        return stream
    sizes = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in decoded_bytes.items())
    log.info(
        "data input: %s (decoded %.3f GB [%s] %s data.cache_max_gb=%s)",
        "streaming from the shards" if stream else "in memory",
        total / 1e9,
        sizes,
        ">" if stream else "<=",
        cache_max_gb,
    )
    return stream
