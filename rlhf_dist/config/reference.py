"""Markdown reference of every option, generated from the schema (docs/config-reference.md)."""

from __future__ import annotations

from pydantic import BaseModel

from rlhf_dist.config.loading import _model_of
from rlhf_dist.config.schema import RLHFConfig


def _default_text(field, section: BaseModel | None, name: str) -> str:
    """The default as the user gets it: read from the enclosing section's own default where there is one (a
    section may override its class's defaults, e.g. dpo.train = TrainConfig(lr=5e-7)), else from the field."""
    if field.is_required():  # e.g. policy.arch.hidden_size: required once the section is given
        return "required"
    if section is not None:
        value = getattr(section, name)
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    return "[...]" if isinstance(value, list) else ("(section)" if isinstance(value, BaseModel)
                                                             else repr(value))


def _section_default(field, parent: BaseModel | None, name: str) -> BaseModel | None:
    """The default instance of a nested section (None for an optional section that is absent by default)."""
    if parent is not None:
        value = getattr(parent, name)
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    return value if isinstance(value, BaseModel) else None


def _constraints(field) -> str:
    parts = []
    for meta in field.metadata:
        for name, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, name, None) is not None:
                parts.append(f"{sym} {getattr(meta, name)}")
    return ", ".join(parts)


def _rows(model: type[BaseModel], prefix: str, section: BaseModel | None = None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        if sub is not None:
            if "list" in str(field.annotation):  # entries of a list: their class's defaults
                rows += _rows(sub, f"{key}[i].")
            else:
                rows += _rows(sub, f"{key}.", _section_default(field, section, name))
            continue
        ann = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | `{ann}` | `{_default_text(field, section, name)}` | {_constraints(field)} | {desc} |")
    return rows


def markdown_reference() -> str:
    header = [
        "# Configuration reference",
        "",
        "Generated from `rlhf_dist/config/` by `make docs` (`rlhf-dist config schema --markdown`). "
        "Every option can be set in YAML or overridden on the command line as `--section.key VALUE`.",
        "",
        "| option | type | default | range | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    return "\n".join(header + _rows(RLHFConfig, "")) + "\n"
