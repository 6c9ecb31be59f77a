"""internal-dns: the resolver of a platform's private network.

Packages by role, imports running one way (docs/architecture.md): the DNS vocabulary (`wire`,
`records`, `counting`, `lru`) at the bottom; `registry/`, which knows nothing of DNS answers;
`config`; `authority/` and `forward/`, the two sources of answers; `ops/` and `transport/`, which
are handed what they need; `dispatch`, `server` and `cli` on top.
"""

__version__ = "0.1.0"
