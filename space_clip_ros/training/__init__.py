"""Offline training and evaluation: split files, datasets, augmentations, losses, metrics, trainer.

Nothing is imported here (no torch at package import); import the submodule you need, e.g.
``from space_clip_ros.training.datasets import DepthDataset``.
"""
