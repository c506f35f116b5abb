"""Benchmarks run by `seglab bench`: `lineage` (R-CNN -> Fast -> Faster -> Mask R-CNN)."""
