"""The one object that describes a run; the CLI builds it, `evol.run` consumes it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from evol.elimination import EliminationRules
from evol.llm import GenerationParams
from evol.seeds import SeedFormat, SeedOptions


class RunConfig(BaseModel):
    """Everything `evol run` needs. Secrets are `SecretStr` and never leave this object."""

    model_config = ConfigDict(extra="forbid")

    seeds: Path
    out: Path
    generations: int = Field(4, ge=0, le=100)
    seed: int = 0
    operations: dict[str, float] = Field(default_factory=dict, description="empty: all, uniform")
    seed_format: SeedFormat | None = None
    field: str | None = None
    skip_invalid: bool = False
    prompts_dir: Path | None = None
    answer_seeds: bool = True
    rules: EliminationRules = EliminationRules()

    backend: str | None = Field(None, description="None: openai if configured, else local")
    base_urls: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = None
    api_key_source: str = Field("OPENAI_API_KEY", description="named in authentication errors")
    model: str | None = None
    evolve_model: str | None = None
    answer_model: str | None = None
    judge_model: str | None = None
    model_path: Path | None = None
    params: GenerationParams = GenerationParams()

    timeout: float = Field(120.0, gt=0)
    concurrency: int = Field(16, ge=1)
    rpm: float | None = Field(None, gt=0, description="requests per minute; None: no cap")
    tpm: float | None = Field(None, gt=0, description="tokens per minute; None: no cap")
    max_retries: int = Field(5, ge=0)
    retry_max_wait: float = Field(60.0, gt=0)
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1, description="reply body cap")
    overwrite: bool = False

    @property
    def seed_options(self) -> SeedOptions:
        return SeedOptions(
            format=self.seed_format, field=self.field, skip_invalid=self.skip_invalid
        )
