"""The config argument every `rlhf-dist` subcommand shares, and --help text derived from the schema.

    add_config_arg(parser, keys=["ppo.steps", "ppo.kl.coef"], defaults="the schema defaults")

gives `CMD CONFIG` and `CMD -c/--config CONFIG` (the same file twice is fine, two different files are
one error line and exit 2) and an epilog listing the main schema options with their defaults.
Lives in config/ so every CLI module (cli.py, cluster/, eval/, feedback/) imports it downwards.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlhf_dist.config.loading import ConfigError
from rlhf_dist.config.schema import RLHFConfig

SCHEMA_DEFAULTS = ("the schema defaults: a tiny config-built Llama on CPU, outputs in runs/rlhf "
                   "(`rlhf-dist config show` prints every value)")
OVERRIDE_NOTE = ("Any schema option can be overridden with a dotted flag, e.g. --ppo.kl.coef 0.05 or "
                 "--run.output_dir=/tmp/run; the full list: docs/config-reference.md or "
                 "`rlhf-dist config schema --markdown`.")
_DOTTED = re.compile(r"^--[A-Za-z_]\w*(\.\w+)+$")


class _ConfigPath(argparse.Action):
    """Stores CONFIG from the positional or from -c/--config into `config`; two different files are an error."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is not None:  # None: the optional positional, absent
            _set_config(parser, namespace, values)


def _set_config(parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: str) -> None:
    if value.startswith("--"):  # argparse takes an option containing a space ('--ppo.rewards=[{kind: model}]')
        vars(namespace).setdefault("spaced_overrides", []).append(value)  # for a positional: claim_config returns it
        return
    current = namespace.config
    if current is not None and Path(current).resolve() != Path(value).resolve():
        parser.exit(2, f"rlhf-dist: config given twice: '{current}' and '{value}' "
                       "(pass one, as CONFIG or as -c/--config)\n")
    namespace.config = value


def claim_config(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Python 3.11's argparse lets an optional positional match nothing when an option separates it from the
    positional before it (`config show --ppo.steps=3 FILE`): FILE lands in the unknown args. Take it back.
    An override whose value has a space went to CONFIG instead (see _set_config): it goes back to the overrides."""
    extra = [*vars(args).pop("spaced_overrides", []), *extra]
    stray = [a for a in extra if not a.startswith("-")]
    if len(stray) != 1 or "config" not in vars(args):
        return extra  # nothing to claim, or a real error that split_overrides reports
    _set_config(parser, args, stray[0])
    return [a for a in extra if a != stray[0]]


def add_config_arg(parser: argparse.ArgumentParser, keys: Iterable[str] = (), defaults: str = SCHEMA_DEFAULTS,
                   cfg: RLHFConfig | None = None) -> None:
    """CONFIG positional + -c/--config, and an epilog naming `keys` (dotted schema paths) with their defaults
    (taken from `cfg`, else the schema) and what runs when no config is given."""
    help_text = "YAML config (configs/*.yaml); same as -c/--config"
    parser.add_argument("config", nargs="?", metavar="CONFIG", action=_ConfigPath, default=None, help=help_text)
    parser.add_argument("-c", "--config", metavar="CONFIG", action=_ConfigPath, default=None,
                        help=f"YAML config; without one: {defaults.split(':')[0]}")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = options_epilog(keys, defaults, cfg)


def options_epilog(keys: Iterable[str], defaults: str, cfg: RLHFConfig | None = None) -> str:
    cfg = cfg or RLHFConfig()
    lines = [textwrap.fill(f"without a config: {defaults}", 100, subsequent_indent="  "), ""]
    keys = list(keys)
    if keys:
        lines.append("main config options (default in brackets):")
        width = max(len(k) for k in keys) + 2
        for key in keys:
            description, value = describe_option(key, cfg)
            lines.append(f"  --{key:<{width}}{description} [{value}]")
        lines.append("")
    lines.append(textwrap.fill(OVERRIDE_NOTE, 100))
    return "\n".join(lines)


def describe_option(key: str, cfg: RLHFConfig) -> tuple[str, str]:
    """('one-line description', 'value in cfg') of a dotted schema path such as 'ppo.kl.coef'."""
    model: type[BaseModel] = type(cfg)
    node: Any = cfg
    field = None
    for part in key.split("."):
        if part not in model.model_fields:
            raise KeyError(f"{key}: no such schema option ('{part}' is not a field of {model.__name__})")
        field = model.model_fields[part]
        node = getattr(node, part)
        model = type(node) if isinstance(node, BaseModel) else model
    return _first_clause(field.description or ""), _short(node)


def _first_clause(text: str, limit: int = 72) -> str:
    text = re.split(r"(?<=[a-z0-9)'])\. |: | \(", text, maxsplit=1)[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def _short(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "..."
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value) or "none"
    return "none" if value is None else str(value)


def join_dotted_overrides(argv: list[str]) -> list[str]:
    """['--ppo.steps', '2', 'c.yaml'] -> ['--ppo.steps=2', 'c.yaml']: the override keeps its value, so
    argparse cannot take the value for the optional CONFIG positional (or the file for the value)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if _DOTTED.match(arg) and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def split_overrides(extra: list[str]) -> list[str]:
    """['--ppo.kl.coef', '0.1', '--a.b=2'] -> ['ppo.kl.coef=0.1', 'a.b=2']."""
    overrides, i = [], 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError([f"unexpected argument '{arg}' (overrides look like --section.key VALUE)"])
        if "=" in arg:
            overrides.append(arg[2:])
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            overrides.append(f"{arg[2:]}={extra[i + 1]}")
            i += 2
        else:
            raise ConfigError([f"option '{arg}' needs a value"])
    return overrides
