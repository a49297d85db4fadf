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


ARENAS_SCRIPT = """
import ctypes, ctypes.util, sys, threading
from ankihost import memory
print(memory.limit_arenas(int(sys.argv[1])))
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)

def churn():
    start.wait()
    for _ in range(20000):  # ctypes lets go of the GIL: the threads malloc at the same time
        libc.free(libc.malloc(4096))

threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
sys.stdout.flush()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(limit: int, env: dict[str, str] | None = None) -> tuple[str, int]:
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, str(limit)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True, timeout=60)
    return run.stdout.strip(), run.stderr.count("Arena ")


def test_the_malloc_arenas_are_capped() -> None:
    said, arenas = _arenas(2)
    assert said == "True" and 1 <= arenas <= 2


def test_an_admins_malloc_arena_max_is_left_alone() -> None:
    said, arenas = _arenas(1, {"MALLOC_ARENA_MAX": "4"})
    assert said == "False" and arenas <= 4
