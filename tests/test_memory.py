"""Host memory kept for reuse (kdlib.memory): large blocks come from glibc's heap, not from a
mapping of their own, unless KDLIB_MALLOC=system; a bad setting is a clear error."""

import ctypes
import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: Bytes glibc mapped in blocks of their own for a 256 MB tensor (mallinfo2's hblkhd, after minus
#: before: what importing torch mapped is not counted).
_PROBE = """
import ctypes, torch, kdlib

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblkhd
block = torch.ones(64 * 2**20)  # 256 MB
print(libc.mallinfo2().hblkhd - before)
"""


def _mapped_bytes(env: dict) -> int:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_large_blocks_come_from_the_heap_unless_system_is_asked_for():
    assert _mapped_bytes({"KDLIB_MALLOC": "keep"}) == 0  # no block of its own
    assert _mapped_bytes({"KDLIB_MALLOC": "system"}) >= 256 * 2**20  # glibc's default: mmap


def test_a_bad_setting_is_a_clear_error(monkeypatch):
    from kdlib.memory import keep_freed_memory

    monkeypatch.setenv("KDLIB_MALLOC", "jemalloc")
    with pytest.raises(ValueError, match="KDLIB_MALLOC must be one of"):
        keep_freed_memory()
    monkeypatch.setenv("KDLIB_MALLOC", "system")
    assert keep_freed_memory() is False


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_the_setting_applies_on_glibc(monkeypatch):
    from kdlib.memory import keep_freed_memory

    monkeypatch.delenv("KDLIB_MALLOC", raising=False)
    assert keep_freed_memory() is True
    assert ctypes.CDLL("libc.so.6")  # still usable
