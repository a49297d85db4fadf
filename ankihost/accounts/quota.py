"""Storage quotas: what counts against one (the collection file and the media files), and the
message the app shows, verbatim, when an upload would take a user past theirs.

Only uploads that add data are refused: a full upload bigger than the quota allows, a media
upload that would grow the media past it. Normal syncs (reviews, edits), downloads and
deletions always go through, so a user over quota can still study and clean up.
"""

from __future__ import annotations

MIB = 1024 * 1024


def refusal(quota_bytes: int | None, used_after: int, growth: int) -> str | None:
    """The message for an upload that would leave `used_after` bytes stored, `growth` more than
    now; None when it may go ahead."""
    if quota_bytes is None or growth <= 0 or used_after <= quota_bytes:
        return None
    return (
        f"This upload would need {used_after / MIB:.1f} MB on the sync server, more than your "
        f"storage quota of {quota_bytes / MIB:.1f} MB. Nothing was changed. Ask the server's "
        "admin for more space, or remove unused media (Tools > Check Media) and try again."
    )
