"""The thin commands layer: printing, default output paths and file writing for each CLI command."""
