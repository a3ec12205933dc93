"""The two shared services every KIS caller goes through, as interfaces.

The REST and WebSocket clients depend only on these; the implementations (a cross-process token
store and rate limiter under ``observer_resources.shared``) are swappable, so a PostgreSQL-backed
store can replace the embedded SQLite one without touching the clients.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class TokenProvider(Protocol):
    async def access_token(self) -> str:
        """A valid access token, shared by every process using this app key; issues one only if none is valid."""

    async def refresh(self, rejected_token: str) -> str:
        """Called after KIS rejected ``rejected_token`` (EGW00123/EGW00121): a token other than the rejected one,
        issuing a new one only if no other process already did (respecting KIS's 1-per-minute issuance limit)."""

    async def approval_key(self) -> str:
        """A WebSocket approval key (/oauth2/Approval) for one connection attempt."""


@runtime_checkable
class RateLimiter(Protocol):
    async def acquire(self) -> float:
        """Wait for one request permit of this app key's shared budget; returns the seconds waited."""
