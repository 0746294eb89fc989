"""The data a trial trains on: datasets decoded once into a uint8 cache (``datasets``), the
batched on-device input pipeline (``pipeline``), the frozen-feature cache HP runs on
(``features``) and the toy task's in-process source pretraining (``toy``)."""

from hpsearch.data.datasets import Split, Splits, load_splits
from hpsearch.data.features import CachedOutputs, FeatureCache, FrozenOutputs
from hpsearch.data.pipeline import InputPipeline

__all__ = [
    "CachedOutputs",
    "FeatureCache",
    "FrozenOutputs",
    "InputPipeline",
    "Split",
    "Splits",
    "load_splits",
]
