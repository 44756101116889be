"""`JsonInt`: an integer as JSON Schema means it, for request models that are strict.

JSON Schema's `"type": "integer"` includes 4.0 (any number whose fraction is zero), so clients
and schemathesis send it; pydantic's strict int refused it with a 400, and its lax int also
takes `false` and `"4"`, which the schema does not. This takes 4.0 as 4 and nothing else that
is not an integer.

    n: JsonInt | None = Field(None, ge=1)
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def _whole_number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value  # ints pass; bools, strings and fractions are refused by the strict int


JsonInt = Annotated[int, BeforeValidator(_whole_number), Strict()]
