"""Filesets: tree hashing, reading and writing archives, safe extraction, packing."""
