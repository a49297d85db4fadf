"""History and copies of users' data: collection snapshots and their restore, retention, the
online backup of the whole server, and collection export (.colpkg). Every name these write
inside SYNC_BASE comes from `storage/paths.py`; every change to a live collection happens under
its user's lock, through the owner of that collection (`sync/session.UserCollection`)."""
