"""Datasets and transforms."""
from .classification import (BadSampleError, ImageClassFolder, build_classification_data, classification_transforms,
                             collate_skipping_bad)

from .faces import AnnotationError, FaceAnnotations, FaceDataset, FaceRecord, collate_detection, detection_transforms, load_face_annotations

__all__ = ["AnnotationError", "FaceAnnotations", "FaceDataset", "FaceRecord", "collate_detection", "detection_transforms", "load_face_annotations",
           "BadSampleError", "ImageClassFolder", "build_classification_data", "classification_transforms", "collate_skipping_bad"]
