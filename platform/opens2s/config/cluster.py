"""The ``cluster`` section of the platform config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ClusterSection(BaseModel):
    """Settings of the cluster workload. Fields are added by the code that reads them."""

    model_config = ConfigDict(extra="forbid")
