"""vaegan-prep: shard an image set once (WebDataset tar shards and/or FFCV .beton)."""
