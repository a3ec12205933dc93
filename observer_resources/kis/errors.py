"""Typed KIS errors. The client decides on the body's code (msg_cd / error_code), never on the
HTTP status alone (docs/kis-protocol.md §4 "Error codes"), and maps each code to one of these."""

from __future__ import annotations


class KisError(Exception):
    """Base of every error the KIS layer raises."""


class KisConfigError(KisError):
    """Configuration is unusable (missing or malformed key, secret, URL, mode)."""


class KisApiError(KisError):
    """KIS answered with a failure body. ``code`` is msg_cd / error_code ('' when absent)."""

    def __init__(self, code: str, message: str, *, http_status: int, tr_id: str = "", rt_cd: str = ""):
        self.code = code
        self.message = message
        self.http_status = http_status
        self.tr_id = tr_id
        self.rt_cd = rt_cd
        super().__init__(f"{code or 'rt_cd=' + rt_cd} {message} (HTTP {http_status}{', ' + tr_id if tr_id else ''})")


class RateLimitedError(KisApiError):
    """EGW00201 still returned after the client's bounded retries."""


class TokenExpiredError(KisApiError):
    """EGW00123, or EGW00121 (invalid/revoked token), after one fresh-token retry."""


class TokenIssueTooSoonError(KisApiError):
    """EGW00133: KIS issues at most one token per minute per app key."""


class BadCredentialsError(KisApiError):
    """EGW00105 or another credential refusal. Never retried: a retry storm cannot fix a key."""


class PaperUnsupportedError(KisApiError):
    """The TR is not offered on the paper (VTS) host."""


class NoDataError(KisApiError):
    """rt_cd '7': the product or period has no data."""


class KisResponseError(KisError, ValueError):
    """A success body whose content cannot be typed (a non-numeric number, a missing field)."""


class TransientError(KisError):
    """Network failure, timeout or 5xx without a KIS body, after bounded retries."""


class WsProtocolError(KisError):
    """A WebSocket frame that cannot be parsed. Counted and logged by the reader, never raised past it."""
