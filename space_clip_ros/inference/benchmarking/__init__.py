"""Benchmark support: the machine description, stage timing and synthetic inputs/decoders."""
