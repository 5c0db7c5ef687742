"""The one object that describes a run; the CLI builds it, `evol.run` consumes it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from evol.errors import UsageError
from evol.llm import BackendSettings, GenerationParams
from evol.llm.dispatch import CallPolicy
from evol.llm.registry import check_engine_options
from evol.method.elimination import EliminationRules
from evol.method.operations import VERIFIABLE, parse_weights
from evol.rundir.records import MAX_GENERATIONS
from evol.seeds import SeedFormat, SeedOptions, Shard

if TYPE_CHECKING:  # the batch backend loads only for --batch, Ray's for --engine ray
    from evol.llm.batch import BatchSettings
    from evol.llm.ray import RaySettings

# The judge writes a small JSON object (a verdict, what the rewrite is, a reason of at most 15
# words: about 40 tokens), the same way every time.
JUDGE_DEFAULTS = GenerationParams(temperature=0.0, max_tokens=100)


class RoleParams(BaseModel):
    """The generation settings of each role (None in a field: the provider's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    evolve: GenerationParams = GenerationParams()
    answer: GenerationParams = GenerationParams()
    judge: GenerationParams = JUDGE_DEFAULTS

    @classmethod
    def from_options(
        cls,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **per_role: float | int | None,
    ) -> RoleParams:
        """Per-role options (`judge_temperature=0.2`) over the shared ones (`temperature`),
        over each role's default. The judge's defaults (temperature 0, 100 tokens) are its own:
        the shared options do not replace them."""
        settings = {}
        for role, default in (("evolve", None), ("answer", None), ("judge", JUDGE_DEFAULTS)):
            chosen = {}
            for name, shared in (("temperature", temperature), ("max_tokens", max_tokens)):
                own = per_role.get(f"{role}_{name}")
                fallback = getattr(default, name) if default else shared
                if (value := own if own is not None else fallback) is not None:
                    chosen[name] = value
            settings[role] = GenerationParams(**chosen)
        return cls(**settings)


class Connection(BaseModel):
    """How a command reaches its LLM and paces its calls: `evol run` and `evol score` alike.
    Secrets are `SecretStr` and never leave this object."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = Field(None, description="None: openai if configured, else local")
    base_urls: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = None
    api_key_source: str = Field("OPENAI_API_KEY", description="named in authentication errors")
    model_path: Path | None = None
    timeout: float = Field(120.0, gt=0)
    concurrency: int = Field(16, ge=1)
    max_retries: int = Field(5, ge=0)
    retry_max_wait: float = Field(60.0, gt=0)
    rpm: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="requests per minute; None: no cap"
    )
    tpm: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="tokens per minute; None: no cap"
    )
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1, description="reply body cap")
    batch: bool = Field(False, description="send requests through the Batch API (half price)")
    batch_max_requests: int = Field(50_000, ge=1, description="requests per batch input file")
    batch_poll_interval: float = Field(60.0, gt=0, description="seconds between looks at a batch")
    batch_no_wait: bool = Field(
        False, description="submit what is due, then stop (status 'pending', exit 3)"
    )

    engine: Literal["live", "ray"] = Field(
        "live", description="live: evol sends each request; ray: through Ray Data LLM"
    )
    ray_address: str | None = Field(None, description="the Ray cluster; None: a local Ray")
    ray_model: str | None = Field(
        None, description="a model vLLM serves on the cluster; None: HTTP to the base URL"
    )
    ray_tp: int = Field(1, ge=1, description="vLLM tensor parallel size")
    ray_replicas: int = Field(1, ge=1, description="HTTP actors or vLLM engine replicas")
    ray_batch_size: int = Field(64, ge=1, description="rows per batch of the Ray stage")

    @model_validator(mode="after")
    def _engine_options(self) -> Self:
        # Before a run or a dry run starts, as open_backend refuses them for its own callers;
        # and --rpm/--tpm, which a batch cannot honour.
        check_engine_options(
            self.backend,
            engine=self.engine,
            ray_model=self.ray_model,
            base_urls=self.base_urls,
            batch=self.batch,
            model_path=self.model_path,
        )
        if self.batch and (self.rpm or self.tpm):
            raise UsageError(
                "--rpm and --tpm pace live requests; the Batch API has limits of its own: "
                "drop them with --batch"
            )
        return self

    @property
    def in_flight(self) -> int:
        """Requests (and lineages) at once: with --batch, enough to fill an input file, since
        each waits for its whole batch."""
        return max(self.concurrency, self.batch_max_requests) if self.batch else self.concurrency

    def call_policy(self, in_flight: int | None = None) -> CallPolicy:
        """How the command's dispatcher sends its calls: `in_flight` at once (None: as many as
        `in_flight` says), the retries, and the --rpm/--tpm budget."""
        return CallPolicy(
            in_flight=self.in_flight if in_flight is None else in_flight,
            max_retries=self.max_retries,
            retry_max_wait=self.retry_max_wait,
            rpm=self.rpm,
            tpm=self.tpm,
        )

    def batch_settings_in(self, state_dir: Path) -> BatchSettings | None:
        """With --batch, how the batch backend groups and waits, its state kept in `state_dir`."""
        if not self.batch:
            return None
        from evol.llm.batch import BatchSettings

        return BatchSettings(
            state_dir=state_dir,
            # A batch is submitted once no request came for this long (or its file is full):
            # never longer than a look at the batches, so short polls (tests, a local server)
            # are not held up by it.
            quiet_period=min(1.0, self.batch_poll_interval),
            max_requests=self.batch_max_requests,
            poll_interval=self.batch_poll_interval,
            no_wait=self.batch_no_wait,
            max_retries=self.max_retries,
            retry_max_wait=self.retry_max_wait,
        )

    def ray_settings(self) -> RaySettings | None:
        """With --engine ray, how requests go through Ray."""
        if self.engine != "ray":
            return None
        from evol.llm.ray import RaySettings

        return RaySettings(
            address=self.ray_address,
            model=self.ray_model,
            tensor_parallel=self.ray_tp,
            replicas=self.ray_replicas,
            batch_size=self.ray_batch_size,
            # A wave holds what is in flight: every lineage's current call.
            max_wave=self.in_flight,
        )

    def backend_settings(self) -> BackendSettings:
        """What the backend is made from."""
        return BackendSettings(
            base_urls=self.base_urls,
            api_key=self.api_key,
            api_key_source=self.api_key_source,
            timeout=self.timeout,
            max_response_bytes=self.max_response_bytes,
            model_path=self.model_path,
        )


class SeedFields(BaseModel):
    """How a command reads its seed file: `evol run` and `evol optimize` alike."""

    seed_format: SeedFormat | None = None
    instruction_field: str | None = Field(None, description="dotted path of the instruction")
    input_field: str | None = Field(None, description="dotted path of the input")
    output_field: str | None = Field(None, description="dotted path of the output")
    skip_invalid: bool = False

    @property
    def seed_options(self) -> SeedOptions:
        return SeedOptions(
            format=self.seed_format,
            instruction_field=self.instruction_field,
            input_field=self.input_field,
            output_field=self.output_field,
            skip_invalid=self.skip_invalid,
        )


class RoleModels(BaseModel):
    """The model of each role (None: `model`, else the server's)."""

    model: str | None = None
    evolve_model: str | None = None
    answer_model: str | None = None
    judge_model: str | None = None

    @property
    def role_models(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in RoleModels.model_fields}


class RunConfig(SeedFields, RoleModels, Connection):
    """Everything `evol run` needs."""

    seeds: Path
    out: Path
    generations: int = Field(4, ge=0, le=MAX_GENERATIONS)
    seed: int = 0
    operations: dict[str, float] = Field(
        default_factory=lambda: parse_weights(None), description="weights; default all, uniform"
    )
    limit: int | None = Field(None, ge=1, description="evolve only the first N seeds")
    shard: Shard | None = Field(
        None, description="evolve only this shard's seeds (after --limit); evol merge joins them"
    )
    prompts_dir: Path | None = None
    answer_seeds: bool = True
    rules: EliminationRules = EliminationRules()

    params: RoleParams = Field(default_factory=lambda: RoleParams())
    system_prompt: str | None = Field(None, description="a system turn for the answering model")
    parallel_judge: bool = Field(
        False, description="answer and judge at once (lower latency; pays for rejected answers)"
    )
    answer_check: bool | None = Field(
        None,
        description="the judge model checks each answer does its task; None: on with a judge_model",
    )
    # Verifiable constraints (#26): used by add_verifiable_constraint and the records it makes.
    constraint_ids: list[str] | None = Field(
        None, description="the IFEval ids add_verifiable_constraint draws from; None: all"
    )
    answer_attempts: int = Field(
        3, ge=0, description="answers drawn again, at most, after one fails a constraint"
    )
    answer_n: bool = Field(
        False,
        description="draw the further answers in one request with n = answer_attempts "
        "(where the backend sends n); False: one call per answer",
    )

    overwrite: bool = False

    @property
    def checks_answers(self) -> bool:
        """Whether the judge model reads each kept answer: asked for, or a judge model of its
        own configured (one call more per evolution that the rules let through)."""
        if self.answer_check is not None:
            return self.answer_check
        return self.judge_model is not None and self.rules.judge

    @property
    def verifiable(self) -> bool:
        """Whether evolutions may add verifiable constraints (add_verifiable_constraint)."""
        return VERIFIABLE in self.operations

    @property
    def seed_options(self) -> SeedOptions:
        return replace(super().seed_options, limit=self.limit, shard=self.shard)
