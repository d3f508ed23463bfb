"""volmerge: upgrade stateful containers without losing data."""

__version__ = "0.1.0"
