"""After training: predictions, metrics, test-time augmentation, interpretation, export."""
