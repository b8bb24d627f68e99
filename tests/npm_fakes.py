"""Fakes for the npm-registry fetchers' tests: a package tarball and a URL opener."""

import base64
import hashlib
import io
import tarfile


def npm_tarball(files: dict[str, bytes], folder: str = "package", drop: str | None = None):
    """A gzipped tarball holding ``files`` under ``folder/`` (all but ``drop``), as the npm
    registry serves packages, and its ``sha512-<base64>`` integrity string."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            if name != drop:
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    payload = buffer.getvalue()
    return payload, "sha512-" + base64.b64encode(hashlib.sha512(payload).digest()).decode()


class FakeOpener:
    """Stands in for ``urllib.request.urlopen``: serves ``payload`` and counts the calls."""

    def __init__(self, payload: bytes):
        self.payload, self.calls = payload, 0

    def __call__(self, url):
        self.calls += 1
        return io.BytesIO(self.payload)
