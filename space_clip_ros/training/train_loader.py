"""The training data order: a loader whose epochs can start part-way, and the state a resume needs.

The order of an epoch is a function of (seed, epoch) alone (``DistributedSampler.set_epoch``), in
one process as in many, and each sample's augmentation a function of (seed, epoch, index). Resuming
in the middle of an epoch therefore needs only the number of steps already done: the sampler skips
that many batches' worth of its indices, without loading them, and the DataLoader's generator goes
back to its state from before the epoch's iterator was made, so that the new iterator draws the
same worker seed as the uninterrupted run did and leaves the generator where that run left it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .config import TrainConfig
from .distributed import DistContext


def seed_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn signature
    """Seed numpy and python in a DataLoader worker from the torch seed the loader gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch can start after its first ``skip`` indices.

    A rank's share of a permutation is every ``world_size``-th index; skipping the same number on
    every rank skips the first ``skip * world_size`` positions of the permutation, so a run resumed
    with another number of processes still sees each remaining sample of the epoch once.
    """

    skip = 0

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


class EpochLoader:
    """The training ``DataLoader``, its sampler and generator; :meth:`epoch` starts at any step.

    Args:
        dataset: the training dataset (or the feature cache's view of it).
        config: the run's configuration (batch, workers, seed, step cap).
        context: this process's place in the job (each rank loads ``batch_size / world_size``).
        pin_memory: pin host batches (CUDA).
    """

    def __init__(self, dataset: Dataset, config: TrainConfig, context: DistContext, pin_memory: bool) -> None:
        data = config.data
        if data.batch_size % context.world_size:
            raise ValueError(
                f"data.batch_size={data.batch_size} (the global batch) does not divide by {context.world_size} "
                "processes"
            )
        self.batch_size = data.batch_size // context.world_size
        self.sampler = EpochSampler(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.run.seed,
            drop_last=data.drop_last,
        )
        self.generator = torch.Generator().manual_seed(config.run.seed + 7919 * context.rank)
        self.loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=data.num_workers,
            pin_memory=pin_memory,
            drop_last=data.drop_last,
            worker_init_fn=seed_worker,
            generator=self.generator,
        )
        steps = len(self.loader)
        if config.train.max_steps_per_epoch:
            steps = min(steps, config.train.max_steps_per_epoch)
        if steps == 0:
            raise ValueError(
                f"{len(dataset)} training images give no full batch of {self.batch_size} per process; "
                "lower data.batch_size or set data.drop_last=false"
            )
        self.steps_per_epoch = steps
        self._epoch_start_state: torch.Tensor | None = None

    def epoch(self, epoch: int, done_steps: int = 0) -> Iterator[dict[str, Any]]:
        """The batches of ``epoch`` after its first ``done_steps`` (at most ``steps_per_epoch`` in all)."""
        self.sampler.start_epoch(epoch, done_steps * self.batch_size)
        # Making the iterator draws the workers' base seed from the generator: keep the state before.
        self._epoch_start_state = self.generator.get_state()
        return itertools.islice(iter(self.loader), max(self.steps_per_epoch - done_steps, 0))

    def generator_state(self, mid_epoch: bool) -> torch.Tensor:
        """The generator state a resume restores: before this epoch's iterator, or (between epochs) now."""
        if mid_epoch and self._epoch_start_state is not None:
            return self._epoch_start_state.clone()
        return self.generator.get_state()

    def restore_generator(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
