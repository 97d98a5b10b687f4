"""Markdown reference of every option, generated from the schema (docs/config-reference.md)."""

from __future__ import annotations

from pydantic import BaseModel

from rlhf_dist.config.loading import _model_of
from rlhf_dist.config.schema import RLHFConfig


def _default_text(field) -> str:
    if field.is_required():  # e.g. policy.arch.hidden_size: required once the section is given
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "[...]" if isinstance(value, list) else ("(section)" if isinstance(value, BaseModel) else repr(value))
    return repr(field.default)


def _constraints(field) -> str:
    parts = []
    for meta in field.metadata:
        for name, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, name, None) is not None:
                parts.append(f"{sym} {getattr(meta, name)}")
    return ", ".join(parts)


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        if sub is not None:
            suffix = "[i]" if "list" in str(field.annotation) else ""
            rows += _rows(sub, f"{key}{suffix}.")
            continue
        ann = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | `{ann}` | `{_default_text(field)}` | {_constraints(field)} | {desc} |")
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
