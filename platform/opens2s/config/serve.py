"""The ``serve`` section of the platform config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ServeSection(BaseModel):
    """Settings of the serve workload. Fields are added by the code that reads them."""

    model_config = ConfigDict(extra="forbid")
