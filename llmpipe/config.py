"""The one config loader: read config.yaml, validate it against the schema, fill defaults.

The schemas ship inside the package (``llmpipe/schemas``), so a regular ``pip install .`` has
them; the Snakefile validates against this same SCHEMA_FILE. This module serves
``llmpipe <stage> --config config.yaml`` runs outside Snakemake, and turns a section into the
canonical JSON string that rules pass as params.
"""
from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_FILE = SCHEMA_DIR / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value the schema rejects; the message names the key."""


def canonical_json(section: Any) -> str:
    """JSON with keys sorted recursively, so reordering config.yaml reruns nothing."""
    return json.dumps(section, sort_keys=True, separators=(",", ":"))


def load_config(path: str | os.PathLike, schema_file: Path = SCHEMA_FILE) -> dict[str, Any]:
    """Load and validate a config file, with the schema's defaults filled in."""
    with open(path) as fh:
        config = yaml.safe_load(fh) or {}
    validate_config(config, schema_file)
    return config


def validate_config(config: dict[str, Any], schema_file: Path = SCHEMA_FILE) -> None:
    """Validate in place (filling defaults), raising ConfigError that names the key at fault."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    def retrieve(uri: str) -> Resource:
        contents = read_schema(schema_file.parent / uri.rsplit("/", 1)[-1])
        # a section's own $schema would switch jsonschema back to its stock validator, which
        # fills no defaults; the sections are read as the top-level schema's draft instead
        contents.pop("$schema", None)
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    schema = read_schema(schema_file)
    schema.setdefault("$id", schema_file.name)
    registry = Registry(retrieve=retrieve)
    validator_cls = _with_defaults(jsonschema.Draft202012Validator)
    validator = validator_cls(schema, registry=registry)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ConfigError(f"config key '{key}': {err.message}")


def read_schema(path: Path) -> dict[str, Any]:
    """A schema file's contents (a fresh copy: the caller may change it)."""
    path = Path(path)
    return copy.deepcopy(_parsed_yaml(path, path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=128)
def _parsed_yaml(path: Path, mtime_ns: int) -> Any:
    # Every stage validates its section when it starts: parsed with libyaml when present and
    # once per file, since a $ref'd file (common.schema.yaml) is retrieved once per reference,
    # this took 0.35-0.47 s of each job's start, against a job's 1-2 s of work in the data stages.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)


def _with_defaults(validator_class):
    """A validator that fills ``default`` values into objects as it validates them."""
    import jsonschema

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, json.loads(json.dumps(subschema["default"])))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def stage_params(args_params: str | None, args_config: str | None, section: str) -> dict:
    """The config section a stage runs with: ``--params JSON`` (from a rule) or ``--config``."""
    if args_params is not None:
        config = {section: json.loads(args_params)}
        validate_config(config)  # Snakemake's validate leaves a $ref'd section's defaults out
        return config[section]
    if args_config is not None:
        return load_config(args_config)[section]
    raise ConfigError(f"stage '{section}' needs --params JSON or --config config.yaml")
