"""Field types shared by every domain's request and response models.

Every text a client sends is constrained in the OpenAPI document itself (length and a
pattern), so that what the schema promises is exactly what the API accepts: no control
characters (PostgreSQL refuses NUL in text), no leading or trailing blanks.
"""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Final, Self

from fastapi import Path
from pydantic import AfterValidator, BaseModel, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from protocol.topics import VEHICLE_ID_PATTERN

# One printable character, or printable text that neither starts nor ends with a blank.
PRINTABLE_TRIMMED: Final = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"

ShortText = Annotated[str, StringConstraints(max_length=100, pattern=PRINTABLE_TRIMMED)]
"""A name, a city, a device label: 1-100 printable characters."""
LongText = Annotated[str, StringConstraints(max_length=500, pattern=PRINTABLE_TRIMMED)]
"""A reason or a note: 1-500 printable characters."""
# E.164 allows 15 digits after the country code's "+"; local Chinese mobile numbers are 11.
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[1-9][0-9]{5,14}$")]
"""A phone number: digits with an optional leading +, 6 to 15 digits."""
# An address as mail systems deliver it: dot-atom local part, a domain of LDH labels and an
# alphabetic TLD. A pattern rather than email-validator, so the OpenAPI document says exactly
# what is accepted (email-validator also refuses reserved domains such as .test, which a
# client reading the schema could not know).
EMAIL_PATTERN: Final = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN), AfterValidator(str.lower)
]
"""An email address, stored and compared lower-cased."""


# Vehicle ids are MQTT topic levels: a path parameter no vehicle can have never reaches the
# database.
VehicleIdPath = Annotated[str, Path(pattern=VEHICLE_ID_PATTERN, description="The vehicle's id.")]
"""A vehicle id in a URL path."""


# A PATCH may leave any field out; it may send null only for the optional ones. For the
# others null is absent from the schema (SkipJsonSchema) and refused by `PatchBody`.
Keep = SkipJsonSchema[None]
"""In a PATCH body, `X | Keep`: the field may be left out, not set to null."""


@functools.cache
def _not_nullable(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if Keep in typing.get_args(field.annotation)
    )


class PatchBody(BaseModel):
    """A PATCH body: a field left out keeps its value, `null` clears an optional one.

    A field typed `X | Keep` has no null in the schema; a client that sends one anyway is
    refused here (422), since the stored value cannot be null.
    """

    @model_validator(mode="after")
    def _required_stay_set(self) -> Self:
        not_nullable = _not_nullable(type(self))
        cleared = sorted(
            name
            for name in self.model_fields_set
            if getattr(self, name) is None and name in not_nullable
        )
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null")
        return self
