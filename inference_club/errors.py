"""The one error tree of the hub. Every failure a client can see is one of these.

::

    HubError                      status  type / shape
    ├── AuthError                 401     {"detail": ...}
    ├── MalformedBody             400     {"detail": ...}  (body is not JSON)
    ├── InvalidRequest            400     invalid_request (names ``param``)
    │   ├── InvalidSpec           400     invalid_spec
    │   └── TooManyItems          400     too_large
    ├── RequestTooLarge           413     request_too_large
    ├── UnsupportedMediaType      415     unsupported_media_type
    ├── NotFound                  404     not_found
    ├── NoProvider                404     no_provider
    ├── Conflict                  409     conflict
    ├── RateLimited               429     rate_limited (Retry-After)
    ├── Busy                      503     busy (Retry-After)
    └── UpstreamError             502     upstream_error
        ├── UpstreamTimeout       504     upstream_error
        └── UpstreamStatus        4xx     engine's own error, passed through

Errors are raised anywhere and rendered in one place: ``surfaces.http.error_handlers``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HubError(Exception):
    """Base of every error a client can see."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    #: ``envelope`` renders OpenAI's ``{"error": {...}}``; ``detail`` renders ``{"detail": ...}``.
    shape: ClassVar[str] = "envelope"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        return self.status

    def body(self) -> dict[str, Any]:
        if self.shape == "detail":
            return {"detail": self.message}
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class AuthError(HubError):
    """Missing, unknown or revoked API key."""

    status = 401
    type = "authentication_error"
    shape = "detail"

    def __init__(self, message: str = "Invalid or missing API key.") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class MalformedBody(HubError):
    """The body could not be parsed at all (not JSON, not an object)."""

    status = 400
    type = "invalid_request"
    shape = "detail"


class InvalidRequest(HubError):
    """A field is missing, has the wrong type or an invalid value."""

    status = 400
    type = "invalid_request"


class InvalidSpec(InvalidRequest):
    """A workflow spec fails validation."""

    type = "invalid_spec"


class TooManyItems(InvalidRequest):
    """A batch carries more items than allowed."""

    type = "too_large"


class RequestTooLarge(HubError):
    """Body, file or prompt over its limit."""

    status = 413
    type = "request_too_large"


class UnsupportedMediaType(HubError):
    """Upload of a content type the endpoint cannot take."""

    status = 415
    type = "unsupported_media_type"


class NotFound(HubError):
    """Unknown object, or one the caller does not own (no existence leak)."""

    status = 404
    type = "not_found"


class NoProvider(HubError):
    """No online provider reachable by the caller serves the model with that type."""

    status = 404
    type = "no_provider"


class Conflict(HubError):
    """The action is not valid in the object's current state."""

    status = 409
    type = "conflict"


class RateLimited(HubError):
    """Over the key's request or token limit."""

    status = 429
    type = "rate_limited"


class Busy(HubError):
    """Every matching provider stayed at capacity past the queue timeout."""

    status = 503
    type = "busy"


class UpstreamError(HubError):
    """The provider's local server errored or could not be reached."""

    status = 502
    type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    """The provider did not answer in time."""

    status = 504


class UpstreamStatus(UpstreamError):
    """An engine's own 4xx answer, passed through with its status."""

    def __init__(self, status: int, body: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self._status = status
        self._body = body

    @property
    def status_code(self) -> int:
        return self._status

    def body(self) -> dict[str, Any]:
        return self._body


ALL_ERRORS: tuple[type[HubError], ...] = (
    AuthError,
    MalformedBody,
    InvalidRequest,
    InvalidSpec,
    TooManyItems,
    RequestTooLarge,
    UnsupportedMediaType,
    NotFound,
    NoProvider,
    Conflict,
    RateLimited,
    Busy,
    UpstreamError,
    UpstreamTimeout,
)
