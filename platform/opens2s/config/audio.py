"""The ``audio`` section of the platform config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AudioSection(BaseModel):
    """Settings of the audio workload. Fields are added by the code that reads them."""

    model_config = ConfigDict(extra="forbid")
