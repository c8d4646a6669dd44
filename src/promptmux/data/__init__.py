"""Encoding, collation, task streams and task samplers."""
