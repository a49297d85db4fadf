"""Test support for ankihost: run sync servers and drive the real Anki client.

Submodules:

* :mod:`tests.support.server`   - start/stop/restart a sync server subprocess
  (ankihost or the official ``anki.syncserver``) on a loopback port.
* :mod:`tests.support.client`   - a small wrapper around the real client
  (``anki.collection.Collection``): login, sync, full upload/download, media.
* :mod:`tests.support.content`  - deterministic, realistic collection content.
* :mod:`tests.support.snapshot` - a normalised snapshot of a collection, for
  asserting that two devices hold the same data after a sync.
* :mod:`tests.support.old_client` - the old real client (anki 2.1.54, sync
  protocol 10) in a venv of its own, driven through ``old_client_driver.py``.

These modules only import ``anki`` lazily where they need it, so the server
helpers can be used without the client wheel.
"""
