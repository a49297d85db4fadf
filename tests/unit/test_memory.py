"""Memory handed back to the system after large requests and idle users."""

import time

from ankihost import memory


def test_memory_release_runs_once_per_delay() -> None:
    memory.release_memory()  # glibc: free heap pages go back; elsewhere a no-op
    memory.release_memory_soon(0.05)
    assert memory._pending.locked()  # one release is pending; a second call adds none
    memory.release_memory_soon(0.05)
    deadline = time.monotonic() + 5
    while memory._pending.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not memory._pending.locked()
