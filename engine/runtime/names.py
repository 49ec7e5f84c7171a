"""Container names: validation and docker-style random names.

Docker names a container ``<adjective>_<surname>`` when ``--name`` is not
given (moby's pkg/namesgenerator). Dockyard does the same with its own
lists: adjectives, and people who shaped operating systems and computing.
"""

from __future__ import annotations

import random
import re

from ..errors import UsageError

# moby's restrictedNamePattern (daemon/names.go): at least two characters.
VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

ADJECTIVES = (
    "agile", "bold", "brave", "bright", "calm", "clever", "curious", "daring", "eager",
    "fearless", "focused", "friendly", "gentle", "happy", "honest", "humble", "jolly",
    "keen", "kind", "lively", "lucid", "mellow", "merry", "modest", "nifty", "patient",
    "plucky", "quiet", "quirky", "rapid", "serene", "sharp", "steady", "stoic", "sunny",
    "swift", "tender", "tidy", "trusty", "vivid", "wise", "witty", "zealous",
)

SURNAMES = (
    "allen", "babbage", "backus", "bell", "bosworth", "cerf", "codd", "conway", "corbato",
    "dijkstra", "engelbart", "floyd", "goldberg", "hamilton", "hopper", "kahn", "kay",
    "kernighan", "knuth", "lamport", "liskov", "lovelace", "mccarthy", "mcilroy", "menage",
    "minsky", "morris", "naur", "neumann", "perlman", "pike", "ritchie", "shannon",
    "sammet", "stroustrup", "tanenbaum", "thompson", "torvalds", "turing", "wilkes", "wirth",
)


def validate(name: str) -> str:
    """Return ``name`` without a leading slash, or raise UsageError (docker's wording)."""
    bare = name[1:] if name.startswith("/") else name
    if not VALID_NAME.match(bare):
        raise UsageError(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return bare


def generate(rng: random.Random | None = None) -> str:
    rng = rng or random.SystemRandom()
    return f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}"
