"""Media sync: each user's media folder and media index, and the `/msync/…` steps.

`user_media.UserMedia` owns a user's open index; `sync` holds the steps over it, `handlers`
their request/reply wrapping; `names`, `staging`, `journal` and `archive` the file-level work.
"""
