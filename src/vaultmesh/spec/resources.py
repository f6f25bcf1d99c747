"""Placeholder until the mesh-as-code models land."""

from pydantic import BaseModel, ConfigDict


class ResourcesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
