"""The normal (incremental) collection sync: one module per protocol step, plus the session.

`handlers.METHODS` is what the web layer calls; each step holds no SQL (see `storage/`).
"""
