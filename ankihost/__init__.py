"""ankihost: a self-hosted Anki sync server."""

__version__ = "0.1.0"
