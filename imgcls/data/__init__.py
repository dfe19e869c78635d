"""CPU side of the pipeline: items, labels, splits, target blocks, decoding, item transforms, loaders."""
