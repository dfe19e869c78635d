"""Models: timm bodies with a fastai-style head, in parameter groups."""
