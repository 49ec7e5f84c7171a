"""Content-addressed storage: blobs named by the sha256 of their bytes."""

from .store import ContentStore, Writer, sha256_digest

__all__ = ["ContentStore", "Writer", "sha256_digest"]
