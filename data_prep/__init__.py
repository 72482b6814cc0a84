"""vaegan-prep: shard an image set once (WebDataset tar shards and/or FFCV .beton)."""

__version__ = "0.1.0"
