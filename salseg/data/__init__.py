"""Data layer: decoding, dataset sources and layouts, validation, augmentation recipes,
datasets, the LightningDataModule, the optional resize cache and the synthetic set."""
from salseg.data.errors import DataError, DataLayoutError
from salseg.data.io import read_image, read_mask

__all__ = ["DataError", "DataLayoutError", "read_image", "read_mask"]
