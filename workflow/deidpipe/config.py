"""Load and check config.yaml (with --config overrides) before anything runs."""

from pathlib import Path
from typing import Any

from deidpipe.errors import PipelineError, join_problems
from deidpipe.schema import apply_defaults, schema_problems

BOOLEAN_KEYS = ("upload", "reupload")
TEXT_KEYS = ("group", "project", "sessions", "profile", "staging", "results", "fw",
             "upload_command", "ledger")
TRUE_WORDS = {"true": True, "yes": True, "false": False, "no": False}


def _as_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
        return TRUE_WORDS[value.strip().lower()]
    # Anything else is left for the schema to reject with a clear message.
    return value


def _as_text(key: str, value: Any, raw_overrides: dict[str, str]) -> Any:
    # Snakemake turns --config group=007 into the number 7; the raw text is the truth.
    if key in raw_overrides:
        return raw_overrides[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def raw_config_overrides(argv: list[str]) -> dict[str, str]:
    """The literal ``key=value`` texts given after ``--config`` on the command line."""
    overrides: dict[str, str] = {}
    collecting = False
    for token in argv:
        if token in ("--config", "-C"):
            collecting = True
            continue
        if token.startswith("--config="):
            token = token.removeprefix("--config=")
            collecting = True
        elif token.startswith("-"):
            collecting = False
            continue
        if collecting and "=" in token:
            key, _, value = token.partition("=")
            overrides[key] = value
    return overrides


def normalise_config(config: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """Coerce command-line values, fill defaults and validate; raise PipelineError if invalid."""
    raw_overrides = raw_config_overrides(argv or [])
    checked = dict(config)
    for key in BOOLEAN_KEYS:
        if key in checked:
            checked[key] = _as_bool(checked[key])
    for key in TEXT_KEYS:
        if key in checked:
            checked[key] = _as_text(key, checked[key], raw_overrides)
    checked = apply_defaults(checked, "config")
    problems = [f"setting '{field}' {problem}" for field, problem in
                schema_problems(checked, "config")]
    if problems:
        raise PipelineError(join_problems("config.yaml (or --config) is not valid:", problems))
    return checked


def check_profile_exists(config: dict[str, Any], profiles_dir: Path) -> Path:
    """Return the folder of the configured profile, or explain which profiles exist."""
    profile_dir = profiles_dir / config["profile"]
    if not profile_dir.is_dir():
        # profiles/default is Snakemake's own workflow profile, not a de-identification one.
        available = sorted(p.name for p in profiles_dir.iterdir()
                           if p.is_dir() and p.name != "default")
        raise PipelineError(
            f"setting 'profile': there is no folder {profile_dir}. "
            f"Profiles available: {', '.join(available) or 'none'}."
        )
    return profile_dir
