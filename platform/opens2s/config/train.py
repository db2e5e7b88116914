"""The ``train`` section of the platform config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TrainSection(BaseModel):
    """Settings of the train workload. Fields are added by the code that reads them."""

    model_config = ConfigDict(extra="forbid")
