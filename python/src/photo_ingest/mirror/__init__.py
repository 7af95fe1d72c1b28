"""Mirrors: second (third…) verified copies of the library, and the bit-rot scrub."""
