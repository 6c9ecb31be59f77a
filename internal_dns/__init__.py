"""internal-dns: the resolver of a platform's private network."""

__version__ = "0.1.0"
