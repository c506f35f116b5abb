"""models/segmentation."""
