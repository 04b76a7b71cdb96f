"""MedMNIST data: the catalog of supported flags, loading into tensors, client partitioning."""

from fedrobust.data.catalog import DatasetInfo, check_supported_flag, dataset_info
from fedrobust.data.loading import ImageSplit, load_split, resolve_data_root
from fedrobust.data.partition import partition_indices

__all__ = [
    "DatasetInfo",
    "ImageSplit",
    "check_supported_flag",
    "dataset_info",
    "load_split",
    "partition_indices",
    "resolve_data_root",
]
