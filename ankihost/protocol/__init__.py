"""The wire envelope: the anki-sync header, zstd bodies, legacy multipart. No collection logic."""
