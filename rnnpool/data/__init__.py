"""Datasets and transforms."""
from .classification import (BadSampleError, ImageClassFolder, build_classification_data, classification_transforms,
                             collate_skipping_bad)

__all__ = ["BadSampleError", "ImageClassFolder", "build_classification_data", "classification_transforms", "collate_skipping_bad"]
