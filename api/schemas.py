"""Field types shared by every domain's request and response models.

Every text a client sends is constrained in the OpenAPI document itself (length and a
pattern), so that what the schema promises is exactly what the API accepts: no control
characters (PostgreSQL refuses NUL in text), no leading or trailing blanks.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, StringConstraints

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
