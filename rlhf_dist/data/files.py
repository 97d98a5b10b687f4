"""The data files a stage reads: configured paths, or built-in demo data written into the run dir
(only when a split uses it, and only after the user's files were read: DataFiles, read_splits)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.errors import (
    DataFileError, DataFileNotFound, DataValidationError, RowError, naming_option, reason_counts,
    write_rejected_rows,
)
from rlhf_dist.data.pairs import PairLoadReport, load_preference_pairs
from rlhf_dist.data.tokenize import encode_pair_dataset, encode_sft_dataset
from rlhf_dist.data.validate import load_records
from rlhf_dist.utils import check_output_dir

log = logging.getLogger(__name__)
REJECTED_ROWS = "rejected_rows.jsonl"
T = TypeVar("T")
# skip-mode rejected rows of the files read_splits is reading: saved once every file was read and is usable
_DEFERRED: ContextVar[list[tuple[Path, list[RowError], str]] | None] = ContextVar("deferred_rejects", default=None)


def _data_paths(cfg: RLHFConfig) -> dict[str, str | None]:
    d = cfg.data
    return {"sft": d.sft_path, "pairs": d.pairs_path, "eval_pairs": d.eval_pairs_path,
            "prompts": d.prompts_path, "eval_prompts": d.eval_prompts_path}


class DataFiles:
    """The files a run reads: the user's (data.*_path) or the built-in demo data in <run>/data.

    Nothing is written when this is made. The demo files are written the first time a split that
    uses them is asked for (`files.prompts`, `files.path("prompts")`): a stage that reads the user's
    files first (read_splits) writes nothing before they were read and validated, and a run that uses
    only the user's files never writes the demo data at all."""

    def __init__(self, cfg: RLHFConfig) -> None:
        self._cfg = cfg
        self.given = {k: Path(v) for k, v in _data_paths(cfg).items() if v is not None}
        self.pairs_format = cfg.data.pairs_format if cfg.data.pairs_path else "pair"
        self.eval_pairs_format = cfg.data.pairs_format if cfg.data.eval_pairs_path else "pair"
        self._demo: dict[str, Path] | None = None

    def is_given(self, split: str) -> bool:
        return split in self.given

    def option(self, split: str) -> str:
        return f"data.{split}_path"

    def path(self, split: str) -> Path:
        """The split's file; a built-in split writes the demo data into <run>/data first (once)."""
        if split in self.given:
            return self.given[split]
        if self._demo is None:
            from rlhf_dist.data.demo import write_demo_files

            out = Path(self._cfg.run.output_dir)
            check_output_dir(out)  # a file or read-only dir: one line, before any write
            n = self._cfg.data.demo_size
            self._demo = write_demo_files(out / "data", n=n, seed=self._cfg.run.seed)
            log.info("built-in demo data (%d rows per split) written to %s", n, out / "data")
        return self._demo[split]

    sft = property(lambda self: self.path("sft"))
    pairs = property(lambda self: self.path("pairs"))
    eval_pairs = property(lambda self: self.path("eval_pairs"))
    prompts = property(lambda self: self.path("prompts"))
    eval_prompts = property(lambda self: self.path("eval_prompts"))


def check_given_data_paths(cfg: RLHFConfig) -> None:
    """Every data.*_path the user set exists: a typo fails in one line before anything is written."""
    for key, given in _data_paths(cfg).items():
        if given is not None and not Path(given).exists():
            raise DataFileNotFound(f"{given}: data file not found (data.{key}_path; check the path or the "
                                   "working directory)")
        if given is not None and Path(given).is_file() and Path(given).stat().st_size == 0:
            raise DataFileError(f"{given}: no data rows (the file is empty; data.{key}_path)")


def resolve_data_files(cfg: RLHFConfig) -> DataFiles:
    """The configured data files (each one set must exist); any left unset is the built-in demo data,
    written into <run>/data only when a stage asks for it (DataFiles.path)."""
    check_given_data_paths(cfg)
    return DataFiles(cfg)


def read_splits(files: DataFiles, readers: dict[str, Callable[[Path], T]]) -> dict[str, T]:
    """{split: reader(its file)}, the user's files read first: the demo data is written (if a split uses
    it) only after every user-given file was read and validated. A whole-file problem names its option
    (`data.pairs_path: ...`); rows skipped in 'skip' mode go to <run>/rejected_rows.jsonl only once all
    splits were read."""
    pending: list[tuple[Path, list[RowError], str]] = []
    token = _DEFERRED.set(pending)
    try:
        out = {}
        for split in sorted(readers, key=lambda s: not files.is_given(s)):  # stable: the given ones first
            try:
                out[split] = readers[split](files.path(split))
            except DataValidationError as err:
                if files.is_given(split):
                    raise naming_option(err, files.option(split)) from None
                raise
    finally:
        _DEFERRED.reset(token)
    for run_dir, errors, what in pending:
        _save_rejected(run_dir, errors, what)
    return out


def load_prompts(cfg: RLHFConfig, path: Path) -> list[str]:
    """The prompt texts of a prompt-only file (data.on_error for bad rows); a file with none fails."""
    loaded = load_records(path, "prompt", on_error=cfg.data.on_error)
    if not loaded.records:
        raise DataFileError(f"{path}: no usable prompts ({loaded.summary()}; {reason_counts(loaded.errors)})")
    return [r.prompt for r in loaded.records]


def read_pairs(cfg: RLHFConfig, path: Path, fmt: str) -> tuple[list, PairLoadReport]:
    """The preference pairs of a file as the RM stage keeps them (data.tie_policy, min_confidence, ...),
    bad rows skipped and counted in the report."""
    d = cfg.data
    ab_opts = {"tie_policy": d.tie_policy, "min_confidence": d.min_confidence,
               "confidence_as_weight": d.confidence_as_weight, "confidence_as_target": d.confidence_as_target}
    return load_preference_pairs(
        path, fmt, on_error="skip", min_gap=d.rating_min_gap if fmt == "rating" else 0.0,
        **(ab_opts if fmt == "ab" else {}),
    )


def load_encoded_pairs(cfg: RLHFConfig, tokenizer, path: Path, fmt: str, what: str, check_only: bool = False) -> list:
    """Read, validate and tokenise a preference-pair file as data.* says; logs what was kept and why not.

    Every bad row (schema problems and over-long rows alike, each with its file:line) is collected
    before deciding: data.on_error 'fail' raises one DataValidationError listing them, 'skip' logs
    the count per reason and writes each one with its reason to <run>/rejected_rows.jsonl.
    check_only: the same verdict, nothing logged or written (a command's checks before it starts).
    """
    d = cfg.data
    pairs, report = read_pairs(cfg, path, fmt)
    encoded = encode_pair_dataset(tokenizer, pairs, d.max_length, d.truncation, "skip", locations=report.locations)
    if not check_only:
        log.info("%s %s", what, report.summary())  # the summary names the file
        log.info("%s: %s", what, encoded.summary())
    errors = report.load.errors + encoded.errors
    _settle_bad_rows(cfg, errors, path, what, usable=bool(encoded.examples), check_only=check_only)
    if not encoded.examples:
        raise DataFileError(f"{path}: no usable preference pairs ({report.summary()}; {encoded.summary()}"
                            f"{_why(errors)}){_tie_hint(cfg, report)}")
    return encoded.examples


def _tie_hint(cfg: RLHFConfig, report: PairLoadReport) -> str:
    """Every usable A/B row a tie that data.tie_policy 'drop' dropped: say how to train on them instead."""
    if report.n_pairs or not report.dropped_ties or cfg.data.tie_policy != "drop":
        return ""
    return (f"; all {report.dropped_ties} usable rows are ties, which data.tie_policy 'drop' drops: "
            "--data.tie_policy half trains on them (target 0.5)")


def _why(errors: list[RowError]) -> str:
    return f"; {reason_counts(errors)}" if errors else ""


def load_encoded_sft(cfg: RLHFConfig, tokenizer, path: Path, what: str, check_only: bool = False) -> list:
    """Read, validate and tokenise an SFT file; bad rows (and check_only) as in :func:`load_encoded_pairs`."""
    d = cfg.data
    loaded = load_records(path, "sft", on_error="skip")
    encoded = encode_sft_dataset(tokenizer, loaded.records, d.max_length, d.truncation, "skip",
                                 locations=loaded.locations)
    if not check_only:
        log.info("%s %s", what, loaded.summary())
        log.info("%s: %s", what, encoded.summary())
    errors = loaded.errors + encoded.errors
    _settle_bad_rows(cfg, errors, path, what, usable=bool(encoded.examples), check_only=check_only)
    if not encoded.examples:
        raise DataFileError(f"{path}: no usable SFT examples ({loaded.summary()}; {encoded.summary()}"
                            f"{_why(errors)})")
    return encoded.examples


def _settle_bad_rows(cfg: RLHFConfig, errors: list[RowError], path: Path, what: str, usable: bool,
                     check_only: bool = False) -> None:
    """'fail': raise listing the bad rows (the first ones, the rest counted per reason), writing nothing.
    'skip' with usable rows left: log the count per reason and save each one with its reason to
    <run>/rejected_rows.jsonl (after the other files, when read_splits reads them)."""
    if not errors:
        return
    errors = sorted(errors, key=_line_order)  # schema and over-long problems in file order
    run_dir = Path(cfg.run.output_dir)
    if cfg.data.on_error == "fail":
        raise DataValidationError(errors, source=str(path))
    if not usable or check_only:  # no usable rows: the caller fails with the count per reason, writing nothing
        return
    pending = _DEFERRED.get()
    if pending is None:
        _save_rejected(run_dir, errors, what)
    else:
        pending.append((run_dir, errors, what))
    log.warning("%s: skipped %d bad row(s) of %s: %s (each with its reason in %s)", what,
                len({e.location for e in errors}), path, reason_counts(errors), run_dir / REJECTED_ROWS)


def _line_order(err: RowError) -> tuple[str, int]:
    where, _, line = err.location.rpartition(":")
    number = line.split()[-1] if line.split() else ""  # 'file:7', 'file:row 3', 'file:item 2'
    return (where, int(number)) if number.isdigit() else (err.location, -1)


_started: set[Path] = set()  # rejected_rows.jsonl files this process has begun (a rerun starts them afresh)


def _save_rejected(run_dir: Path, errors: list[RowError], what: str) -> Path | None:
    path = run_dir / REJECTED_ROWS
    try:
        if path not in _started:
            path.unlink(missing_ok=True)
            _started.add(path)
        return write_rejected_rows(path, errors, what)
    except OSError as err:  # an unwritable run dir must not hide the data problem itself
        log.warning("cannot write %s: %s", path, err)
        return None


HOLD_OUT_EVERY = 10  # data.eval_pairs_path unset with the user's pairs: every 10th pair is held out for evaluation


def hold_out(items: list[T]) -> tuple[list[T], list[T]]:
    """(train, held out): every HOLD_OUT_EVERY-th item held out, spread over the whole file (a file sorted
    by time or topic still gives a held-out set like the rest)."""
    k = HOLD_OUT_EVERY
    return [x for i, x in enumerate(items) if i % k != k - 1], items[k - 1 :: k]
