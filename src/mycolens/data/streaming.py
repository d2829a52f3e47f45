"""Images streamed from Parquet row groups: each (rank, worker) reads its own rows, decoded and augmented on the fly.

Per epoch the row groups are put in a seeded order and laid end to end; rank r of W takes one contiguous W-th of
those rows, and DataLoader worker k of K a batch-aligned K-th of the rank's rows, so no two processes read the
same rows and the loader yields exactly ceil(rows / batch_size) batches. A shuffle buffer of encoded rows mixes
neighbouring row groups; memory holds the buffer and one row group per worker, never the split.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mycolens.data import storage
from mycolens.data.row_groups import RowGroup
from mycolens.inference.preprocess import decode_image, resize_center_crop

MEMORY = "<memory>"  # RowGroup.file of the rows held in memory (outlier exposure images)

# Lightning warns that an IterableDataset's __len__ may be wrong with several workers; this one splits itself by
# worker (worker_range), so its length is exact
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


def epoch_order(groups: Sequence[RowGroup], seed: int, epoch: int, shuffle: bool) -> list[RowGroup]:
    """The row groups in file order, or in an order drawn from (seed, epoch)."""
    if not shuffle:
        return list(groups)
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(len(groups))
    return [groups[i] for i in perm]


def rank_range(total: int, rank: int, world_size: int, drop_last: bool) -> tuple[int, int]:
    """Rows [start, stop) of `rank`, the same count on every rank (DDP steps in lockstep): the remainder dropped
    (training), or padded by wrapping round to the first rows, as DistributedSampler pads (evaluation)."""
    share = total // world_size if drop_last else -(-total // world_size)
    return rank * share, (rank + 1) * share


def worker_range(rows: int, batch_size: int, worker: int, workers: int) -> tuple[int, int]:
    """Rows [start, stop) of one DataLoader worker: whole batches, so the loader yields ceil(rows/batch) batches."""
    batches = -(-rows // batch_size)
    first, last = worker * batches // workers, (worker + 1) * batches // workers
    return min(first * batch_size, rows), min(last * batch_size, rows)


def slices(groups: Sequence[RowGroup], start: int, stop: int) -> Iterator[tuple[RowGroup, int, int]]:
    """(group, lo, hi): the parts of the groups, laid end to end, that fall in rows [start, stop)."""
    offset = 0
    for g in groups:
        lo, hi = max(start - offset, 0), min(stop - offset, g.rows)
        if lo < hi:
            yield g, lo, hi
        offset += g.rows
        if offset >= stop:
            return


def shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """A shuffle buffer of `size` items: filled first, then each new item replaces a random one that is yielded."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(len(buffer)))
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


class StreamingImages(IterableDataset):
    """(image, label) pairs of one split read from row groups on demand; set_partition/set_epoch before iterating.
    Each row's photo is decoded here (in the DataLoader worker) and `transform` makes its uint8 tensor."""

    def __init__(
        self,
        groups: Sequence[RowGroup],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        shuffle_buffer: int = 2048,
        memory_rows: Sequence[tuple[bytes, int]] = (),
    ) -> None:
        self.groups = list(groups) + ([RowGroup(MEMORY, 0, len(memory_rows))] if memory_rows else [])
        self.memory_rows = list(memory_rows)
        self.transform, self.batch_size = transform, int(batch_size)
        self.shuffle, self.seed, self.shuffle_buffer = bool(shuffle), int(seed), int(shuffle_buffer)
        self.rank, self.world_size, self.epoch = 0, 1, 0

    @property
    def total_rows(self) -> int:
        return sum(g.rows for g in self.groups)

    def set_partition(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        start, stop = rank_range(self.total_rows, self.rank, self.world_size, drop_last=self.shuffle)
        return stop - start

    def _rows(self, start: int, stop: int) -> Iterator[tuple[bytes, int]]:
        """Encoded (image bytes, label) of rows [start, stop) of this epoch's order, a row group at a time."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, start])
        order = epoch_order(self.groups, self.seed, self.epoch, self.shuffle)
        if stop > self.total_rows:  # evaluation padded to equal shares: the last rank wraps round
            order = order + order
        for g, lo, hi in slices(order, start, stop):
            if g.file == MEMORY:
                blobs, labels = zip(*self.memory_rows[lo:hi], strict=True)
            else:
                table = storage.open_parquet(g.file).read_row_group(g.index, columns=["image", "label"])
                table = table.slice(lo, hi - lo)
                blobs, labels = table.column("image").to_pylist(), table.column("label").to_pylist()
            order = rng.permutation(len(blobs)) if self.shuffle else range(len(blobs))
            for i in order:
                yield blobs[i], int(labels[i])

    def decode(self, blob: bytes) -> Image.Image:
        """The row's photo, decoded and checked as serving decodes it; `transform` makes the tensor."""
        return decode_image(blob)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        first, _ = rank_range(self.total_rows, self.rank, self.world_size, drop_last=self.shuffle)
        lo, hi = worker_range(len(self), self.batch_size, worker, workers)
        rows = self._rows(first + lo, first + hi)
        if self.shuffle:
            rows = shuffled(
                rows, self.shuffle_buffer, np.random.default_rng([self.seed, self.epoch, self.rank, worker])
            )
        for blob, label in rows:
            yield self.transform(self.decode(blob)), label  # an int: the collate makes the batch's int64 tensor


class CentreCrop:
    """Evaluation: a decoded photo -> serving's resize and centre crop to uint8 CHW (as the in-memory path holds
    it); the batch is normalized on its device (ShardDataModule.on_after_batch_transfer)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = int(image_size)

    def __call__(self, photo: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(resize_center_crop(photo, self.image_size).transpose(2, 0, 1)))


class EpochLoader(DataLoader):
    """A DataLoader that tells its StreamingImages the current epoch (from `epoch_fn`) each time it is iterated."""

    def __init__(self, dataset: StreamingImages, epoch_fn: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.epoch_fn = epoch_fn

    def __iter__(self) -> Any:
        self.dataset.set_epoch(self.epoch_fn())
        return super().__iter__()
