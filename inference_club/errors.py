"""The one error tree of the hub. Every failure a client can see is one of these.

::

    HubError                      status  type / shape
    ├── AuthError                 401     {"detail": ..., "error": {...}}  invalid_api_key
    ├── MalformedBody             400     {"detail": ..., "error": {...}}  (body is not JSON)
    ├── InvalidRequest            400     invalid_request (names ``param``)
    │   ├── InvalidScript         400     invalid_script
    │   ├── InvalidSpec           400     invalid_spec
    │   └── TooManyItems          400     too_large
    ├── RequestTooLarge           413     request_too_large
    ├── UnsupportedMediaType      415     unsupported_media_type
    ├── NotFound                  404     not_found
    ├── NoProvider                404     no_provider
    ├── Conflict                  409     conflict
    │   └── ServicesUnavailable   409     services_unavailable (lists ``missing``)
    ├── RateLimited               429     rate_limited (Retry-After)
    ├── Busy                      503     busy (Retry-After)
    │   ├── DatabaseUnavailable   503     busy (Retry-After)
    │   ├── SharedStateUnavailable 503    busy (Retry-After; Redis of a scaled-out hub)
    │   └── StorageUnavailable    503     busy (Retry-After; the S3 file store)
    └── UpstreamError             502     upstream_error
        ├── AnswerTooLarge        502     upstream_error (over a size cap; a job is not retried)
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
    #: ``envelope`` renders OpenAI's ``{"error": {...}}``; ``detail`` renders ``{"detail": ...}``
    #: with the same envelope beside it, so SDK clients read the message too.
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
        envelope = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        if self.shape == "detail":
            return {"detail": self.message, **envelope}
        return envelope


class AuthError(HubError):
    """Missing, unknown or revoked API key."""

    status = 401
    type = "invalid_api_key"
    shape = "detail"

    def __init__(self, message: str = "Invalid or missing API key.") -> None:
        super().__init__(message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


class MalformedBody(HubError):
    """The body could not be parsed at all (not JSON, not an object)."""

    status = 400
    type = "invalid_request"
    shape = "detail"


class InvalidRequest(HubError):
    """A field is missing, has the wrong type or an invalid value."""

    status = 400
    type = "invalid_request"


class InvalidScript(InvalidRequest):
    """A dialogue script breaks the ``[S1]``/``[S2]`` rules (voice generation)."""

    type = "invalid_script"


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


class ServicesUnavailable(Conflict):
    """A workflow needs modalities no provider the caller can reach serves."""

    type = "services_unavailable"

    def __init__(self, message: str, *, missing: list[str]) -> None:
        super().__init__(message, param="spec")
        self.missing = missing

    def body(self) -> dict[str, Any]:
        data = super().body()
        data["error"]["missing"] = self.missing
        return data


class RateLimited(HubError):
    """Over the key's request or token limit."""

    status = 429
    type = "rate_limited"


class Busy(HubError):
    """Every matching provider stayed at capacity past the queue timeout."""

    status = 503
    type = "busy"


class DatabaseUnavailable(Busy):
    """The database is unreachable or did not answer within its timeouts."""

    def __init__(
        self, message: str = "The database is unavailable; retry shortly.", *, retry_after_s: int = 2
    ) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class SharedStateUnavailable(Busy):
    """Redis, which holds a scaled-out hub's live state, is unreachable or too slow."""

    def __init__(
        self,
        message: str = "The hub's shared state (Redis) is unavailable; retry shortly.",
        *,
        retry_after_s: int = 2,
    ) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class StorageUnavailable(Busy):
    """The object store holding files (S3) is unreachable, too slow or refused the request."""

    def __init__(
        self, message: str = "The file store is unavailable; retry shortly.", *, retry_after_s: int = 2
    ) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class UpstreamError(HubError):
    """The provider's local server errored or could not be reached."""

    status = 502
    type = "upstream_error"


class AnswerTooLarge(UpstreamError):
    """The engine's answer went past a size cap; retrying would only repeat it."""


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
    InvalidScript,
    InvalidSpec,
    TooManyItems,
    RequestTooLarge,
    UnsupportedMediaType,
    NotFound,
    NoProvider,
    Conflict,
    ServicesUnavailable,
    RateLimited,
    Busy,
    DatabaseUnavailable,
    SharedStateUnavailable,
    StorageUnavailable,
    UpstreamError,
    UpstreamTimeout,
    AnswerTooLarge,
)
