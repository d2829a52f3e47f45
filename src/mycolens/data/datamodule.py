"""LightningDataModule over the Parquet shards: decoded once into memory when they fit data.cache_max_gb, else
streamed row group by row group (mycolens.data.streaming). Training augmentation (mycolens.data.augment) is the same
random resized crop and flip either way, cut from the held image in memory and from the decoded photo when streamed,
normalized per batch: in the loader's collate in memory, on the batch's device when streamed (the workers hand over
uint8 batches)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from mycolens.catalogue import Catalogue, load_catalogue
from mycolens.data.augment import CropFlip, NormalizeBatch, PhotoCropFlip, normalize_images
from mycolens.data.input_mode import should_stream
from mycolens.data.row_groups import RowGroup, decoded_bytes, scan_split
from mycolens.data.shards import check_catalogue, read_manifest, read_split
from mycolens.data.streaming import CentreCrop, EpochLoader, StreamingImages
from mycolens.inference.preprocess import decode_image, resize_center_crop


def decode_split(shards_dir: str | Path, split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split as uint8 NCHW (same decode/resize/crop as serving) and int64 labels."""
    table = read_split(shards_dir, split, columns=["image", "label"])
    images = [resize_center_crop(decode_image(b), image_size) for b in table.column("image").to_pylist()]
    x = (
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        if images
        else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    )
    y = torch.tensor(table.column("label").to_pylist(), dtype=torch.long)
    return x, y


def outlier_jpegs(outliers: dict[str, Any], image_size: int) -> list[bytes]:
    """conf/data's `outliers`: not-a-mushroom images for outlier exposure, JPEG-encoded (quality 90) as the shards'
    photos are, so no codec trace tells them apart; label -1 in training batches."""
    from mycolens.data.outliers import render_outliers
    from mycolens.utils.images import encode_jpeg

    raw = render_outliers(
        list(outliers["families"]),
        int(outliers["images"]),
        image_size,
        int(outliers["seed"]),
        float(outliers.get("greyscale_share", 0.0)),
        float(outliers.get("jitter_share", 0.0)),
    )
    return [encode_jpeg(im, 90, subsampling=0) for im in raw]


def outlier_images(outliers: dict[str, Any], image_size: int) -> torch.Tensor:
    """The outlier_jpegs decoded to uint8 NCHW (the in-memory path)."""
    images = [resize_center_crop(decode_image(b), image_size) for b in outlier_jpegs(outliers, image_size)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


Transform = Callable[[torch.Tensor], torch.Tensor]


class TensorImages(Dataset):
    """uint8 NCHW images + labels, transformed per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def eval_transform(mean: list[float], std: list[float]) -> v2.Transform:
    """What serving does after resize/crop: scale to [0, 1] and normalize."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class ShardDataModule(LightningDataModule):
    """Train/val/test (+ood) loaders over data/shards; the class order is checked against the catalogue."""

    def __init__(
        self,
        shards_dir: str,
        catalogue: str | None = None,
        image_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        augment: dict[str, Any] | None = None,
        persistent_workers: bool = False,
        outliers: dict[str, Any] | None = None,
        cache_max_gb: float | None = None,
        shuffle_buffer: int = 2048,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.shards_dir = shards_dir
        self.catalogue: Catalogue = load_catalogue(catalogue)
        self.manifest: dict[str, Any] | None = None
        self.splits: dict[str, TensorImages | StreamingImages] = {}
        self.row_groups: dict[str, list[RowGroup]] = {}
        self.streaming: bool | None = None  # decided once, in the first setup()

    @property
    def mean(self) -> list[float]:
        return self._manifest()["mean"]

    @property
    def std(self) -> list[float]:
        return self._manifest()["std"]

    def _manifest(self) -> dict[str, Any]:
        if self.manifest is None:
            self.manifest = read_manifest(self.shards_dir)
            check_catalogue(self.manifest, self.catalogue)
        return self.manifest

    def _outlier_count(self) -> int:
        hp = self.hparams
        return int(hp.outliers.get("images", 0)) if hp.outliers else 0

    def check_shards(self) -> None:
        """Open every shard's footer (train, val, test) and decide in memory vs streaming; once, before training."""
        if self.streaming is not None:
            return
        manifest = self._manifest()
        self.row_groups = {s: scan_split(self.shards_dir, s, manifest) for s in ("train", "val", "test")}
        rows = {s: sum(g.rows for g in groups) for s, groups in self.row_groups.items()}
        rows["train"] += self._outlier_count()
        sizes = {s: decoded_bytes(n, self.hparams.image_size) for s, n in rows.items()}
        self.streaming = should_stream(sizes, self.hparams.cache_max_gb)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.check_shards()
        ev = eval_transform(self.mean, self.std)
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}.get(
            stage or "", ("train", "val", "test")
        )
        for split in wanted:
            if split in self.splits:
                continue
            # train: crop and flip per image on uint8; in memory normalized per batch by the loader's collate_fn,
            # streamed on the batch's device after transfer (on_after_batch_transfer)
            augment = dict(hp.augment or {})
            if self.streaming:
                photo_tf = PhotoCropFlip(hp.image_size, augment) if split == "train" else CentreCrop(hp.image_size)
                self.splits[split] = self._stream(split, photo_tf)
            else:
                self.splits[split] = self._in_memory(
                    split, CropFlip(hp.image_size, augment) if split == "train" else ev
                )

    def _in_memory(self, split: str, tf: Transform) -> TensorImages:
        hp = self.hparams
        x, y = decode_split(self.shards_dir, split, hp.image_size)
        if split == "train" and self._outlier_count():
            ox = outlier_images(dict(hp.outliers), hp.image_size)
            x, y = torch.cat([x, ox]), torch.cat([y, torch.full((len(ox),), -1, dtype=torch.long)])
        return TensorImages(x, y, tf)

    def _stream(self, split: str, tf: Callable[[Image.Image], torch.Tensor]) -> StreamingImages:
        hp = self.hparams
        extra = []
        if split == "train" and self._outlier_count():
            extra = [(b, -1) for b in outlier_jpegs(dict(hp.outliers), hp.image_size)]
        return StreamingImages(
            self.row_groups[split],
            tf,
            batch_size=hp.batch_size,
            shuffle=split == "train",
            seed=hp.seed,
            shuffle_buffer=hp.shuffle_buffer,
            memory_rows=extra,
        )

    def _epoch(self) -> int:
        return int(self.trainer.current_epoch) if self.trainer is not None else 0

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        data = self.splits[split]
        if isinstance(data, StreamingImages):
            if self.trainer is not None:
                data.set_partition(self.trainer.global_rank, self.trainer.world_size)
            # the epoch reaches the workers with the dataset they are started with: no persistent workers. The
            # workers hand over uint8 batches (a quarter of float32's bytes through shared memory and to the GPU)
            return EpochLoader(
                data, self._epoch, batch_size=hp.batch_size, num_workers=hp.num_workers, pin_memory=hp.pin_memory
            )
        collate = NormalizeBatch(self.mean, self.std) if split == "train" else None
        return DataLoader(
            data,
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            collate_fn=collate,
        )

    def eval_loader(self, split: str) -> DataLoader:
        """All of one split (val or test) in file order, in this process alone: for plain evaluation loops."""
        self.setup({"val": "validate", "test": "test"}[split])
        data = self.splits[split]
        if isinstance(data, StreamingImages):
            data.set_partition(0, 1)
            return EpochLoader(
                data, lambda: 0, batch_size=int(self.hparams.batch_size), collate_fn=NormalizeBatch(self.mean, self.std)
            )
        return DataLoader(data, batch_size=int(self.hparams.batch_size), shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A streamed loader's uint8 batch, now on its device: scaled and normalized there (in-memory batches
        arrive normalized)."""
        if isinstance(batch, list | tuple) and len(batch) == 2 and batch[0].dtype == torch.uint8:
            return [normalize_images(batch[0], self.mean, self.std), batch[1]]
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)
