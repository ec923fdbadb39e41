"""JSON-schema validation with messages that name the place and say what is expected."""

from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema
import yaml

# Flywheel's rule for a group id, as the Flywheel CLI checks it (config.schema.yaml and
# sessions.schema.yaml hold the same pattern; a test checks that they agree).
GROUP_ID_PATTERN = "^[0-9a-z][0-9a-z.@_-]{0,30}[0-9a-z]$"
GROUP_ID_RULE = ("is not a Flywheel group id: use 2 to 32 lower-case letters, digits, '.', "
                 "'@', '_' or '-', starting and ending with a letter or digit (the Flywheel "
                 "CLI refuses any other)")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load ``<name>.schema.yaml`` of the package's ``schemas`` folder (package data: found
    the same in a checkout and in an installed wheel)."""
    resource = files("deidpipe") / "schemas" / f"{name}.schema.yaml"
    return yaml.safe_load(resource.read_text(encoding="utf-8"))


def _describe(error: jsonschema.ValidationError) -> str:
    """Turn one jsonschema error into words, without repeating the offending value."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        return "is not a setting this pipeline knows (check the spelling)"
    if error.validator == "type":
        return f"must be {_article(error.validator_value)}"
    if error.validator == "pattern" and schema.get("pattern") == GROUP_ID_PATTERN:
        return GROUP_ID_RULE
    if error.validator in ("pattern", "not"):
        return (
            "may contain only letters, digits, '.', '_' and '-' (no spaces or '/'), "
            "may not start with '-' (the Flywheel CLI would read it as an option), "
            "and may not be '.' or '..'"
            + (" or 'default'" if "default" in str(schema.get("not", "")) else "")
        )
    if error.validator == "minLength":
        return "is empty"
    if error.validator == "enum":
        return "must be one of: " + ", ".join(str(value) for value in error.validator_value)
    if error.validator == "minimum":
        return f"must be at least {error.validator_value}"
    return error.message


def _article(json_type: object) -> str:
    names = {"string": "text", "boolean": "true or false", "integer": "a whole number",
             "object": "a mapping of names to values"}
    return names.get(str(json_type), str(json_type))


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    # Built once: a 10,000-row sheet validates each row against the same schema.
    return jsonschema.Draft202012Validator(load_schema(name))


def schema_problems(instance: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """Validate ``instance`` against a schema; return (field, problem) pairs, sorted."""
    problems = []
    for error in _validator(name).iter_errors(instance):
        if error.validator == "required":
            field = error.message.split("'")[1]
            problems.append((field, "is missing"))
        elif error.validator == "additionalProperties":
            prefix = "".join(f"{part}." for part in error.absolute_path)
            for field in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
                problems.append((prefix + field, _describe(error)))
        else:
            field = ".".join(str(part) for part in error.absolute_path) or "(top level)"
            problems.append((field, _describe(error)))
    return sorted(set(problems))


def apply_defaults(instance: dict[str, Any], name: str) -> dict[str, Any]:
    """Fill keys that the schema gives a default for and the instance lacks."""
    filled = dict(instance)
    for key, spec in load_schema(name).get("properties", {}).items():
        if key not in filled and "default" in spec:
            filled[key] = spec["default"]
    return filled
