"""Device side of the pipeline: the fused batch augmentation and normalization."""
