"""The data files a stage reads: configured paths, or built-in demo data written into the run dir."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.errors import (
    DataFileError, DataFileNotFound, DataValidationError, RowError, reason_counts, write_rejected_rows,
)
from rlhf_dist.data.pairs import PairLoadReport, load_preference_pairs
from rlhf_dist.data.tokenize import encode_pair_dataset, encode_sft_dataset
from rlhf_dist.data.validate import load_records
from rlhf_dist.utils import check_output_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataFiles:
    sft: Path
    pairs: Path
    eval_pairs: Path
    prompts: Path
    eval_prompts: Path
    pairs_format: str
    eval_pairs_format: str


def _data_paths(cfg: RLHFConfig) -> dict[str, str | None]:
    d = cfg.data
    return {"sft": d.sft_path, "pairs": d.pairs_path, "eval_pairs": d.eval_pairs_path,
            "prompts": d.prompts_path, "eval_prompts": d.eval_prompts_path}


def check_given_data_paths(cfg: RLHFConfig) -> None:
    """Every data.*_path the user set exists: a typo fails in one line before anything is written."""
    for key, given in _data_paths(cfg).items():
        if given is not None and not Path(given).exists():
            raise DataFileNotFound(f"{given}: data file not found (data.{key}_path; check the path or the "
                                   "working directory)")
        if given is not None and Path(given).is_file() and Path(given).stat().st_size == 0:
            raise DataFileError(f"{given}: no data rows (the file is empty; data.{key}_path)")


def resolve_data_files(cfg: RLHFConfig) -> DataFiles:
    """Configured data paths; any left unset is filled with built-in demo data in <run>/data."""
    d, paths = cfg.data, _data_paths(cfg)
    demo = {}
    if any(p is None for p in paths.values()):
        check_given_data_paths(cfg)  # before the demo data is written
        from rlhf_dist.data.demo import write_demo_files

        check_output_dir(Path(cfg.run.output_dir))  # a file or read-only dir: one line, before any write
        demo_dir = Path(cfg.run.output_dir) / "data"
        demo = write_demo_files(demo_dir, n=d.demo_size, seed=cfg.run.seed)
        log.info("built-in demo data (%d rows per split) written to %s", d.demo_size, demo_dir)
    resolved = {k: Path(v) if v is not None else demo[k] for k, v in paths.items()}
    return DataFiles(
        **resolved,
        pairs_format=d.pairs_format if d.pairs_path else "pair",
        eval_pairs_format=d.pairs_format if d.eval_pairs_path else "pair",
    )


def read_pairs(cfg: RLHFConfig, path: Path, fmt: str) -> tuple[list, PairLoadReport]:
    """The preference pairs of a file as the RM stage keeps them (data.tie_policy, min_confidence, ...),
    bad rows skipped and counted in the report."""
    d = cfg.data
    ab_opts = {"tie_policy": d.tie_policy, "min_confidence": d.min_confidence,
               "confidence_as_weight": d.confidence_as_weight}
    return load_preference_pairs(
        path, fmt, on_error="skip", min_gap=d.rating_min_gap if fmt == "rating" else 0.0,
        **(ab_opts if fmt == "ab" else {}),
    )


def load_encoded_pairs(cfg: RLHFConfig, tokenizer, path: Path, fmt: str, what: str) -> list:
    """Read, validate and tokenise a preference-pair file as data.* says; logs what was kept and why not.

    Every bad row (schema problems and over-long rows alike, each with its file:line) is collected
    before deciding: data.on_error 'fail' raises one DataValidationError listing them, 'skip' logs
    the count per reason. Either way each one is written with its reason to <run>/rejected_rows.jsonl.
    """
    d = cfg.data
    pairs, report = read_pairs(cfg, path, fmt)
    log.info("%s %s", what, report.summary())  # the summary names the file
    encoded = encode_pair_dataset(tokenizer, pairs, d.max_length, d.truncation, "skip", locations=report.locations)
    log.info("%s: %s", what, encoded.summary())
    _settle_bad_rows(cfg, report.load.errors + encoded.errors, path, what)
    if not encoded.examples:
        raise DataFileError(f"{path}: no usable preference pairs ({report.summary()}; {encoded.summary()})")
    return encoded.examples


def load_encoded_sft(cfg: RLHFConfig, tokenizer, path: Path, what: str) -> list:
    """Read, validate and tokenise an SFT file; bad rows as in :func:`load_encoded_pairs`."""
    d = cfg.data
    loaded = load_records(path, "sft", on_error="skip")
    log.info("%s %s", what, loaded.summary())
    encoded = encode_sft_dataset(tokenizer, loaded.records, d.max_length, d.truncation, "skip",
                                 locations=loaded.locations)
    log.info("%s: %s", what, encoded.summary())
    _settle_bad_rows(cfg, loaded.errors + encoded.errors, path, what)
    if not encoded.examples:
        raise DataFileError(f"{path}: no usable SFT examples ({loaded.summary()}; {encoded.summary()})")
    return encoded.examples


def _settle_bad_rows(cfg: RLHFConfig, errors: list[RowError], path: Path, what: str) -> None:
    """Every bad row to <run>/rejected_rows.jsonl; then fail listing them, or log the count per reason."""
    if not errors:
        return
    errors = sorted(errors, key=_line_order)  # schema and over-long problems in file order
    saved = _save_rejected(Path(cfg.run.output_dir), errors, what)
    if cfg.data.on_error == "fail":
        raise DataValidationError(errors, source=str(path), saved_to=saved)
    log.warning("%s: skipped %d bad row(s) of %s: %s (each with its reason in %s)", what,
                len({e.location for e in errors}), path, reason_counts(errors), saved)


def _line_order(err: RowError) -> tuple[str, int]:
    where, _, line = err.location.rpartition(":")
    number = line.split()[-1] if line.split() else ""  # 'file:7', 'file:row 3', 'file:item 2'
    return (where, int(number)) if number.isdigit() else (err.location, -1)


_started: set[Path] = set()  # rejected_rows.jsonl files this process has begun (a rerun starts them afresh)


def _save_rejected(run_dir: Path, errors: list[RowError], what: str) -> Path | None:
    path = run_dir / "rejected_rows.jsonl"
    try:
        if path not in _started:
            path.unlink(missing_ok=True)
            _started.add(path)
        return write_rejected_rows(path, errors, what)
    except OSError as err:  # an unwritable run dir must not hide the data problem itself
        log.warning("cannot write %s: %s", path, err)
        return None
