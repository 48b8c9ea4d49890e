"""Models stage: network definitions, architecture adapters, checkpoint reading and output heads."""
