"""Base class for every typed config in partita."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors and assignments are validated, so a typo fails at load time."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
