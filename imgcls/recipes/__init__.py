"""Labelling functions for the book's datasets, for `labels: {kind: callable, function: ...}`."""
