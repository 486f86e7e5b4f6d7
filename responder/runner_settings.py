"""The settings of where the flows run: the Prefect server and `responder up`'s runner.

`Settings` inherits them, so they are plain `RESPONDER_*` settings like the others.
"""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings


class RunnerSettings(BaseSettings):
    """The Prefect server the flows run on, and the embedded runner's size."""

    prefect_api_url: str | None = Field(
        None, description="Use this Prefect server instead of starting one (PREFECT_API_URL)."
    )
    prefect_port: int = Field(4200, ge=1, le=65535, description="Port of the local Prefect server.")
    runner_limit: int = Field(
        default_factory=lambda: min(200, 10 * (os.cpu_count() or 1)),
        ge=1,
        le=200,
        json_schema_extra={"default": "10 per CPU, at most 200"},
        description="Flow runs the embedded runner of `responder up` executes at once; more "
        "wait as scheduled runs. Each is a fork of a process with the flows imported.",
    )
