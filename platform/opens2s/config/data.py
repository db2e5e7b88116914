"""The ``data`` section of the platform config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DataSection(BaseModel):
    """Settings of the data workload. Fields are added by the code that reads them."""

    model_config = ConfigDict(extra="forbid")
