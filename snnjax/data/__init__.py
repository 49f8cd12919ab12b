"""Data layer: datasets as host numpy arrays, label noise, subsets, batching and augmentation."""

from snnjax.data.dataset import Dataset
from snnjax.data.datasets import DATASET_NAMES
from snnjax.data.datasets import channel_stats
from snnjax.data.datasets import default_dataset_config
from snnjax.data.datasets import load_dataset
from snnjax.data.datasets import normalize
from snnjax.data.noise import corrupt_labels
from snnjax.data.pipeline import augment_batch
from snnjax.data.pipeline import batch_indices
from snnjax.data.pipeline import epoch_batches
from snnjax.data.pipeline import epoch_permutation
from snnjax.data.pipeline import iterate_batches
from snnjax.data.sources import STANDARD_STATS
from snnjax.data.subsets import balanced_subset
from snnjax.data.subsets import class_counts
from snnjax.data.subsets import long_tailed_counts
from snnjax.data.subsets import long_tailed_subset

__all__ = [
    "DATASET_NAMES", "Dataset", "STANDARD_STATS", "augment_batch", "balanced_subset",
    "batch_indices", "channel_stats", "class_counts", "corrupt_labels", "default_dataset_config",
    "epoch_batches", "epoch_permutation", "iterate_batches", "load_dataset",
    "long_tailed_counts", "long_tailed_subset", "normalize",
]
