"""The JSON bodies /api/users and /api/session take: each model checks a body and is its OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from annotated_types import MaxLen, MinLen
from pydantic import ConfigDict, StrictBool, StrictStr, model_validator

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Omittable, OneOf, Text, checked
from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.fields import check_json, parse_text
from tracker_jobs.core.principal import Role
from tracker_jobs.users.service import MAX_PASSWORD, MIN_PASSWORD, normalize_email

MAX_EMAIL = 256  # the users.email column

Name = Annotated[str, Text(128)]
Password = Annotated[StrictStr, MinLen(MIN_PASSWORD), MaxLen(MAX_PASSWORD)]
RoleName = Annotated[str, OneOf(tuple(Role))]


def parse_email(field: str, raw: object) -> str:
    # Lowercasing can lengthen a few letters ("İ" becomes two characters): the length is of what is stored.
    email = normalize_email(parse_text(field, raw, 1024))
    if "@" not in email or not 3 <= len(email) <= MAX_EMAIL:
        raise FieldError(field, f"must be an email address of at most {MAX_EMAIL} characters")
    return email


Email = Annotated[str, MinLen(3), MaxLen(MAX_EMAIL), checked(parse_email)]


def parse_user_attributes(field: str, raw: object) -> Any:
    """Free-form, bounded; `timezone`, when given, an IANA zone (the user's notifications use it)."""
    attributes = check_json(field, raw)
    zone = attributes.get("timezone") if isinstance(attributes, dict) else None  # not an object: the type says so
    if zone is not None:
        try:
            ZoneInfo(zone if isinstance(zone, str) and zone.strip() else "?")
        except (ZoneInfoNotFoundError, ValueError):
            problem = f"timezone: expected an IANA time zone such as Europe/Berlin, got {zone!r}"
            raise FieldError(field, problem) from None
    return attributes


UserAttributes = Annotated[dict[str, Any], checked(parse_user_attributes)]


class UserChanges(RequestBody):
    """PUT /api/users/{id}: the fields to change."""

    subject = "user"
    email: Omittable[Email] = None  # first: a bad email is the problem, not the name made from it
    name: Omittable[Name] = None
    password: Omittable[Password] = None
    role: Omittable[RoleName] = None
    disabled: Omittable[StrictBool] = None
    limitCommands: Omittable[StrictBool] = None  # Traccar's: the user may send saved commands only
    attributes: Omittable[UserAttributes] = None


class NewUser(UserChanges):
    """POST /api/users: the name defaults to the email, the role to user."""

    email: Email
    password: Password
    role: RoleName = Role.USER

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_email(cls, body: Any) -> Any:
        if isinstance(body, dict) and "name" not in body and isinstance(body.get("email"), str):
            return {**body, "name": normalize_email(body["email"])}
        return body


class NewToken(RequestBody):
    subject = "token"
    name: Name = "api"


class Credentials(RequestBody):
    """POST /api/session. A password longer than any stored one is a wrong password (401), not a 400."""

    # Logging in has always ignored keys it does not know; a client that sends more still logs in.
    model_config = ConfigDict(extra="ignore")
    subject = "login"
    email: Annotated[str, Text(MAX_EMAIL)]
    password: Annotated[StrictStr, MinLen(1)]
