"""How the service refuses a request: BentoML exceptions with the HTTP status they answer with, and the admin
check. BentoML turns a raised `BentoMLException` into its status with the message as the body's error (5xx
messages are hidden, so a refusal the client should read is a 4xx)."""

from __future__ import annotations

import hmac
from http import HTTPStatus

import bentoml
from bentoml.exceptions import BentoMLException

from serving.monitor import count_error


class PayloadTooLarge(BentoMLException):
    """An upload over the size limit (HTTP 413)."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class Unavailable(BentoMLException):
    """A feature this deployment cannot serve, reported with its message (HTTP 409; BentoML hides 5xx messages)."""

    error_code = HTTPStatus.CONFLICT


class AdminRefused(BentoMLException):
    """An admin call without valid credentials (401 without a token, 403 with a wrong one or none configured)."""

    def __init__(self, message: str, status: HTTPStatus):
        super().__init__(message)
        self.error_code = status


def check_admin(ctx: bentoml.Context, expected: str, endpoint: str) -> None:
    """Admin routes need `Authorization: Bearer <token>` with the token in $BGMREC_ADMIN_TOKEN (`expected`)."""
    if not expected:
        count_error(endpoint, "admin_disabled")
        raise AdminRefused("admin routes are disabled on this server: set BGMREC_ADMIN_TOKEN to enable them",
                           HTTPStatus.FORBIDDEN)
    scheme, _, token = ctx.request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        count_error(endpoint, "unauthenticated")
        raise AdminRefused("admin route: send the admin token as `Authorization: Bearer <token>`",
                           HTTPStatus.UNAUTHORIZED)
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        count_error(endpoint, "forbidden")
        raise AdminRefused("admin route: the token is not valid", HTTPStatus.FORBIDDEN)
