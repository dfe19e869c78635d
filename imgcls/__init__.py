"""imgcls: train image classifiers from a YAML experiment spec."""

__version__ = "0.1.0"
