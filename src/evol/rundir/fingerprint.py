"""The fingerprint of a run: what must stay the same for a resumed run (or a merged shard) to
give the dataset one fresh run would.

run.json keys it by stable field names, never by CLI flag spellings, so renaming an option does
not change the file's format; `FLAGS` names each field the way a user changes it, for the
messages that refuse a resume or a merge. Format 1 of run.json keyed it by those spellings:
`from_v1` reads that form.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, JsonValue

from evol.config import RunConfig
from evol.method.prompts import PromptSet
from evol.seeds import detect_format


class Fingerprint(BaseModel):
    """What a resume must match. A field left None was not recorded (a run.json from an evol
    that did not record it) or is unset: either way it is compared as None, as format 1 was."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    seeds_digest: str | None = None
    seed_format: str | None = None
    # The dotted paths of the instruction, the input and the output, in that order: one option
    # group, compared (and named) as one, as format 1 did.
    seed_fields: list[str | None] | None = None
    seed: int | None = None
    operations: dict[str, float] | None = None
    prompts_digest: str | None = None
    backend: str | None = None
    models: dict[str, str] | None = None
    # Per role, the generation options a request sends (only those set): compared per role
    # as sent, so a default left to the provider and one set to the same value differ.
    generation_params: dict[str, dict[str, JsonValue]] | None = None
    system_prompt: str | None = None
    # EliminationRules as recorded: a rule added later is missing here, so it differs.
    elimination_rules: dict[str, JsonValue] | None = None
    answer_check: bool | None = None
    answer_seeds: bool | None = None
    shard: str | None = None
    # Verifiable constraints' options: None in a run that draws none (add_verifiable_constraint
    # not among its operations), as in one made before they existed.
    constraint_ids: list[str] | None = None
    answer_attempts: int | None = None
    # --answer-n: True, or None (not asked for, or a run before it): either is recorded as
    # one before it, so that an older run resumes as it was.
    answer_n: bool | None = None

    @classmethod
    def of(
        cls,
        config: RunConfig,
        seeds_digest: str,
        prompts: PromptSet,
        backend: str,
        models: dict[str, str],
    ) -> Fingerprint:
        """The fingerprint of a run of `config`. `--generations` and `--limit` are not in it:
        a resume may grow them (see manifest.check_resume)."""
        return cls(
            seeds_digest=seeds_digest,
            seed_format=detect_format(config.seeds, config.seed_format),
            seed_fields=[config.instruction_field, config.input_field, config.output_field],
            seed=config.seed,
            operations=dict(sorted(config.operations.items())),
            prompts_digest=prompts.digest(config.operations),
            backend=backend,
            models=dict(models),
            generation_params={role: params.to_request() for role, params in config.params},
            system_prompt=config.system_prompt,
            elimination_rules=config.rules.model_dump(mode="json"),
            answer_check=config.checks_answers,
            answer_seeds=config.answer_seeds,
            shard=str(config.shard) if config.shard else None,
            constraint_ids=config.constraint_ids if config.verifiable else None,
            answer_attempts=config.answer_attempts if config.verifiable else None,
            answer_n=True if config.verifiable and config.answer_n else None,
        )

    def differences(self, other: Fingerprint) -> dict[str, tuple[object, object]]:
        """Each field that differs, named as `FLAGS` names it: {name: (mine, other's)}."""
        return {
            FLAGS[name]: (getattr(self, name), getattr(other, name))
            for name in type(self).model_fields
            if getattr(self, name) != getattr(other, name)
        }


# Each field as a message names it: the option (or options) that set it. Not part of the
# format: rename a flag here and run.json stays as it is.
FLAGS: dict[str, str] = {
    "seeds_digest": "seeds file content",
    "seed_format": "--format",
    "seed_fields": "--instruction-field/--input-field/--output-field",
    "seed": "--seed",
    "operations": "--operations",
    "prompts_digest": "--prompts",
    "backend": "--backend",
    "models": "--model",
    "generation_params": "--temperature/--max-tokens",
    "system_prompt": "--system-prompt",
    "elimination_rules": "elimination rules",
    "answer_check": "--answer-check",
    "answer_seeds": "--answer-seeds",
    "shard": "--shard",
    "constraint_ids": "--constraint-ids",
    "answer_attempts": "--answer-attempts",
    "answer_n": "--answer-n",
}

# Format 1's keys, frozen: they are what run.json files written before format 2 hold, whatever
# the options are called now.
V1_KEYS: dict[str, str] = {
    "seeds file content": "seeds_digest",
    "--format": "seed_format",
    "--instruction-field/--input-field/--output-field": "seed_fields",
    "--seed": "seed",
    "--operations": "operations",
    "--prompts": "prompts_digest",
    "--backend": "backend",
    "--model": "models",
    "--temperature/--max-tokens": "generation_params",
    "--system-prompt": "system_prompt",
    "elimination rules": "elimination_rules",
    "--answer-check": "answer_check",
    "--answer-seeds": "answer_seeds",
    "--shard": "shard",
    "--constraint-ids": "constraint_ids",
    "--answer-attempts": "answer_attempts",
    # Never written by format 1 (it came after format 2): here so that every field has a key.
    "--answer-n": "answer_n",
}


def from_v1(recorded: object) -> object:
    """A format-1 fingerprint (keyed by flag spellings) in format 2's keys. `{}` (a run that
    stopped before asking its backend) is None, no fingerprint; a key format 1 did not write
    is left out, since format 1 compared only the keys of the fingerprint of the day. What is
    not an object is left for the model to refuse."""
    if not isinstance(recorded, dict):
        return recorded
    if not recorded:
        return None
    return {V1_KEYS[key]: value for key, value in recorded.items() if key in V1_KEYS}


def v1_key(field: str) -> str:
    """The format-1 key of `field`, to name a damaged one as the file spells it."""
    return next((key for key, name in V1_KEYS.items() if name == field), field)
