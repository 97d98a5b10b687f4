"""YAML loading, dotted overrides and error messages that name file, line and key.

    cfg = load_config("configs/tiny.yaml", ["ppo.kl.coef=0.05"])

An unknown key is reported with the closest valid one; a bad value with its file and
line; a broken cross-field rule with the fields involved. All before anything starts.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rlhf_dist.config.schema import RLHFConfig

KeyPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config problem; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        # one problem: one line; several: a header and one indented line each
        sep = " " if len(problems) == 1 else "\n  "
        super().__init__("invalid config:" + sep + "\n  ".join(problems))


def _line_map(node: yaml.Node, prefix: KeyPath = ()) -> dict[KeyPath, int]:
    """1-based line of every key in a composed YAML tree."""
    lines: dict[KeyPath, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (str(key_node.value),)
            lines.update(_line_map(value_node, path))
            lines[path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_map(item, prefix + (i,)))
    return lines


def _reject_duplicate_keys(node: yaml.Node, source: str, prefix: KeyPath = ()) -> None:
    """A key given twice in one mapping (any depth) is an error: YAML would keep the last one silently."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in seen and key != "<<":
                where = _dotted(prefix + (key,))
                raise ConfigError([f"{source}:{line}: duplicate key '{where}' (first at line {seen[key]}); "
                                   "keep one of them"])
            seen[key] = line
            _reject_duplicate_keys(value_node, source, prefix + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(item, source, prefix + (i,))


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """Parse a YAML config; returns the mapping and the line of each key path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte 0x{err.object[err.start]:02x}); "
                           "save the file as UTF-8"]) from None
    try:
        node = yaml.compose(text)
        if node is not None:
            _reject_duplicate_keys(node, str(path))
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark, context = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        started = (f" (in the block starting at line {context.line + 1})"
                   if context and mark and context.line != mark.line else "")
        raise ConfigError([f"{where}: invalid YAML: {getattr(err, 'problem', err)}{started}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the top level must be a mapping of sections"])
    return data, (_line_map(node) if node is not None else {})


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _unknown_keys(data: Any, model: type[BaseModel], prefix: KeyPath) -> list[tuple[KeyPath, str]]:
    """(path, message) for each key the schema does not define, with a suggestion."""
    found: list[tuple[KeyPath, str]] = []
    if not isinstance(data, dict):
        return found
    fields = model.model_fields
    for key, value in data.items():
        path = prefix + (key,)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(fields)})"
            found.append((path, f"unknown option{hint}"))
            continue
        sub = _model_of(fields[key].annotation)
        if sub is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                found += _unknown_keys(item, sub, path + (i,))
        else:
            found += _unknown_keys(value, sub, path)
    return found


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _where(source: str, lines: dict[KeyPath, int], path: KeyPath) -> str:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return f"{source}:{lines[path[:cut]]}"
    return source


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """'ppo.kl.coef=0.05' -> (('ppo','kl','coef'), 0.05); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError([f"override '{text}': expected KEY=VALUE (or --KEY VALUE on the command line)"])
    key, raw = text.split("=", 1)
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().lstrip("-").split(".")]
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return tuple(parts), value


def _child_key(node: Any, part: str | int, path: KeyPath, what: str) -> str | int:
    """`part` as a key of `node`, or a ConfigError naming the path (a list index out of range, a value)."""
    here = _dotted(path) or "config"
    if isinstance(node, list):
        if not isinstance(part, int):
            raise ConfigError([f"{what}: '{here}' is a list; use an index, e.g. {here}.0"])
        if not 0 <= part < len(node):
            raise ConfigError([f"{what}: index {part} is past the end of '{here}' ({len(node)} item(s), "
                               f"indexes 0..{len(node) - 1}); set the whole list in the YAML file to add items"])
        return part
    if not isinstance(node, dict):
        raise ConfigError([f"{what}: '{here}' is a value ({node!r}), not a section"])
    return str(part)  # a numeric key of a mapping


def _default_at(path: KeyPath) -> Any:
    """The schema default at `path` (JSON form), or {} when the schema has none there."""
    node: Any = RLHFConfig().model_dump(mode="json")
    for part in path:
        if not isinstance(node, dict) or str(part) not in node:
            return {}
        node = node[str(part)]
    return copy.deepcopy(node)


def _set_path(data: dict[str, Any], path: KeyPath, value: Any, what: str) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        key = _child_key(node, part, path[:i], what)
        if isinstance(node, dict) and key not in node:
            # a list the file does not set (`ppo.rewards.0.weight`): index into the schema's default list
            node[key] = _default_at(path[: i + 1]) if isinstance(path[i + 1], int) else {}
        node = node[key]
    node[_child_key(node, path[-1], path[:-1], what)] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Set each dotted override ('KEY=VALUE', value parsed as YAML) into `data` in place."""
    for text in overrides:
        path, value = parse_override(text)
        _set_path(data, path, value, f"override '{text}'")


def _place(source: str, lines: dict[KeyPath, int], path: KeyPath, overridden: dict[KeyPath, str]) -> str:
    """Where a key's value came from: the command-line override that set it, else the file and line."""
    as_text = tuple(map(str, path))
    for key, text in overridden.items():
        # the override set this key, a key inside it, or (a section path) made it a section
        if as_text[: len(key)] == key or (as_text and key[: len(as_text)] == as_text):
            return f"override --{text}"
    return _where(source, lines, path)


def _with_value(msg: str, value: Any) -> str:
    """pydantic's message plus the bad value, unless the message quotes it already."""
    if isinstance(value, (dict, list)) or repr(value) in msg or (isinstance(value, str) and value in msg):
        return msg
    return f"{msg} (got {value!r})"


def _validate(model: type[M], data: dict[str, Any], source: str, lines: dict[KeyPath, int],
              prefix: KeyPath = (), overridden: dict[KeyPath, str] | None = None) -> M:
    """Validate a raw mapping into `model`, or raise ConfigError listing every problem with its place
    (`overridden`: key path -> the 'KEY=VALUE' override that set it, blamed instead of the file)."""
    overridden = overridden or {}
    unknown = _unknown_keys(data, model, prefix)
    if unknown:
        raise ConfigError([f"{_place(source, lines, p, overridden)}: {_dotted(p)}: {msg}" for p, msg in unknown])
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = prefix + tuple(e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            if loc and e["type"] != "missing":
                msg = _with_value(msg, e.get("input"))
            name = _dotted(loc) or "config"
            problems.append(f"{_place(source, lines, loc, overridden)}: {name}: {msg}")
        raise ConfigError(problems) from None


def build_config(data: dict[str, Any], source: str = "<config>", lines: dict[KeyPath, int] | None = None,
                 overrides: list[str] | None = None) -> RLHFConfig:
    """Validate a raw mapping into RLHFConfig, or raise ConfigError listing every problem
    (a bad value that an override in `overrides` set is blamed on that override)."""
    overridden = {tuple(map(str, parse_override(t)[0])): t.lstrip("-") for t in overrides or []}
    return _validate(RLHFConfig, data, source, lines or {}, overridden=overridden)


def with_overrides(model: M, updates: dict[str, Any], section: str = "", source: str = "<derived config>") -> M:
    """A validated copy of a config (or of one of its sections) with dotted-path updates.

        with_overrides(cfg, {"run.output_dir": "runs/x", "data.pairs_format": "ab"})
        with_overrides(cfg.rollout.sampling, {"samples_per_prompt": 1}, section="rollout.sampling")

    The one way code derives a config: the same checks and error lines as YAML and CLI overrides
    (`section` names where the model sits in the schema, for the messages)."""
    prefix: KeyPath = tuple(section.split(".")) if section else ()
    data = model.model_dump(mode="json")
    for dotted, value in updates.items():
        path = tuple(int(p) if p.isdigit() else p for p in dotted.split("."))
        _set_path(data, path, value, f"{'.'.join(map(str, prefix + path))}={value!r}")
    return _validate(type(model), data, source, {}, prefix)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RLHFConfig:
    """Load a YAML file (or the defaults when path is None) and apply dotted overrides."""
    data, lines = read_yaml(path) if path else ({}, {})
    source = str(path) if path else "<defaults>"
    if overrides:
        apply_overrides(data, overrides)
    return build_config(data, source, lines, overrides)


def config_to_yaml(cfg: RLHFConfig) -> str:
    """The full resolved config as YAML (every option, defaults included)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
