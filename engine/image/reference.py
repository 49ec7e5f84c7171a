"""Image references: ``[registry[:port]/]path[:tag][@digest]``.

The grammar is distribution/reference's (reference.go in
github.com/distribution/reference), the one docker and podman use:

- path components are lowercase ``[a-z0-9]+`` joined by ``.``, ``_``, ``__``
  or runs of ``-``; components are separated by ``/``;
- the first component is a registry *domain* only if it contains ``.`` or
  ``:``, is ``localhost``, or has uppercase letters; otherwise the registry is
  Docker Hub (``docker.io``) and one-component names get ``library/``;
- a tag is ``[\\w][\\w.-]{0,127}``; no tag (and no digest) means ``latest``;
- a digest is ``algorithm:hex`` (at least 32 hex digits).

Dockyard stores and prints the *familiar* form docker prints: ``busybox:latest``
rather than ``docker.io/library/busybox:latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_alnum = r"[a-z0-9]+"
_separator = r"(?:[._]|__|[-]+)"
_path_component = rf"{_alnum}(?:{_separator}{_alnum})*"
_domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_domain = rf"(?:{_domain_component}(?:\.{_domain_component})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"

PATH_RE = re.compile(rf"^{_path_component}(?:/{_path_component})*$")
DOMAIN_RE = re.compile(rf"^{_domain}$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
# An image ID or a prefix of one, as users type it (``docker run 3f2a``).
ID_RE = re.compile(r"^(?:sha256:)?[0-9a-f]{1,64}$")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized image reference."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as docker prints it: ``busybox``, ``localhost:5000/app``."""
        if self.domain == DEFAULT_DOMAIN:
            path = self.path
            if path.startswith(OFFICIAL_PREFIX) and path.count("/") == 1:
                path = path[len(OFFICIAL_PREFIX):]
            return path
        return self.name

    def __str__(self) -> str:
        """The familiar form with tag and/or digest: ``busybox:latest``."""
        s = self.familiar_name
        if self.tag is not None:
            s += f":{self.tag}"
        if self.digest is not None:
            s += f"@{self.digest}"
        return s


def parse(text: str) -> Reference:
    """Parse and normalize a reference typed by a user; a missing tag becomes ``latest``.

    >>> str(parse("busybox"))
    'busybox:latest'
    >>> parse("localhost:5000/team/app:1.0").domain
    'localhost:5000'
    """
    if not text:
        raise InvalidReference("invalid reference format: repository name must have at least one component")
    remainder = text
    digest = None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid reference format: bad digest in {text!r}")
    tag = None
    # A ':' after the last '/' starts the tag (a ':' before it is a port).
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not TAG_RE.match(tag):
            raise InvalidReference(f"invalid reference format: bad tag {tag!r} in {text!r}")

    domain, slash, rest = remainder.partition("/")
    if not slash or ("." not in domain and ":" not in domain and domain != "localhost"
                     and domain.lower() == domain):
        domain, rest = DEFAULT_DOMAIN, remainder
    elif not DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid reference format: bad registry {domain!r} in {text!r}")
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest
    if not PATH_RE.match(rest):
        if PATH_RE.match(rest.lower()):
            raise InvalidReference(
                f"invalid reference format: repository name ({rest}) must be lowercase")
        raise InvalidReference(f"invalid reference format: {text!r}")
    if len(domain) + 1 + len(rest) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            f"invalid reference format: repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, rest, tag, digest)


def looks_like_id(text: str) -> bool:
    """True for ``sha256:<hex>`` or a bare hex prefix a user might type for an image ID."""
    return bool(ID_RE.match(text))
