"""Run outputs on a local disk or behind a storage URI (s3://, gs://, hdfs://, ...), through pyarrow.fs.

    run.output_dir: runs/x | /shared/runs/x     written in place, as always (no copies)
    run.output_dir: s3://bucket/runs/x          the run writes to a local staging dir, mirrored to the URI:

    ~/.cache/rlhf_dist/runs/x-<hash>/           staging ($RLHF_DIST_STAGING/... when set; for multi-node runs
        .rlhf_dist_remote                       put it on a disk every node sees); this marker names the URI
    s3://bucket/runs/x/checkpoints/step_000004/ files first, MANIFEST.json last, then checkpoints/latest:
                                                a cut-short upload is never the latest
    s3://bucket/runs/x/policy/ (report/, ...)   every file, then policy/_COMPLETE (pull skips a dir without it)
    s3://bucket/runs/x/metrics.jsonl, *.json    single objects (one PUT each, atomic)

Object stores have no rename, so completeness is shown by what is written last. Credentials and endpoints come
from the usual places (AWS_* env vars, ~/.aws, GOOGLE_APPLICATION_CREDENTIALS) or the URI's query, e.g.
s3://bucket/x?endpoint_override=http://minio:9000 (pyarrow.fs.FileSystem.from_uri).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rlhf_dist.config import RLHFConfig

log = logging.getLogger(__name__)
MARKER = ".rlhf_dist_remote"  # in a staging dir: the URI it mirrors
PUSHED = ".rlhf_dist_pushed.json"  # in a staging dir: size and mtime of each file already uploaded
COMPLETE = "_COMPLETE"  # written last into an uploaded directory
MANIFEST = "MANIFEST.json"  # a checkpoint's own completeness marker (driver/checkpoint.py)
# What `rlhf-dist pull` brings back: the exported policy, metrics, summary and report.
PULLED = ["policy", "report", "metrics.jsonl", "ppo_metrics.json", "summary.json", "reward_metrics.json",
          "sft_metrics.json", "config.yaml"]
NOT_MIRRORED = {"checkpoints", MARKER, PUSHED}  # checkpoints go up by push_checkpoint, in their own order
_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage URI that cannot be opened, read or written (the message names it)."""


def is_uri(output_dir: str) -> bool:
    """True for scheme://... other than file:// (a file URI is a local path)."""
    match = _URI.match(str(output_dir))
    return bool(match) and match.group(1).lower() != "file"


def local_path(output_dir: str) -> Path:
    """A local run dir as a Path (file:///x -> /x); a remote URI -> its staging dir."""
    if is_uri(output_dir):
        return staging_dir(output_dir)
    text = str(output_dir)
    return Path(text[len("file://"):] if text.lower().startswith("file://") else text)


def staging_dir(uri: str) -> Path:
    """Where a run mirrored to `uri` is written first: stable per URI, so a restart finds it again."""
    uri = uri.rstrip("/")
    root = Path(os.environ.get("RLHF_DIST_STAGING") or Path.home() / ".cache" / "rlhf_dist" / "runs")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", uri.split("?")[0].rstrip("/").rsplit("/", 1)[-1]) or "run"
    return root.expanduser() / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def localize(cfg: RLHFConfig) -> RLHFConfig:
    """cfg with run.output_dir on local disk: a URI becomes its staging dir (marked with the URI)."""
    if not is_uri(cfg.run.output_dir):
        return cfg
    from rlhf_dist.config import ConfigError, with_overrides

    uri = cfg.run.output_dir.rstrip("/")
    try:
        Remote(uri)  # an unknown scheme or a malformed URI fails here, before any work
    except StorageError as err:
        raise ConfigError([str(err)]) from None
    local = staging_dir(uri)
    local.mkdir(parents=True, exist_ok=True)
    (local / MARKER).write_text(json.dumps({"uri": uri}) + "\n")
    log.info("run.output_dir %s: writing to %s, mirrored there", uri, local)
    return with_overrides(cfg, {"run.output_dir": str(local)})


def remote_of(path: Path) -> tuple[str, str] | None:
    """(run URI, path relative to the run) when `path` lies in a staging dir; None for a plain local run."""
    path = Path(path).resolve()
    for parent in (path, *path.parents):
        marker = parent / MARKER
        if marker.is_file():
            rel = path.relative_to(parent).as_posix()
            return json.loads(marker.read_text())["uri"], "" if rel == "." else rel
    return None


def _retry(action: Callable[[], T], what: str, attempts: int = 3) -> T:
    """Transient network errors are retried with backoff; the last one is raised as a StorageError."""
    for attempt in range(attempts):
        try:
            return action()
        except OSError as err:
            if attempt == attempts - 1 or isinstance(err, FileNotFoundError):
                raise StorageError(f"{what}: {err}") from err
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


class Remote:
    """A run's URI opened through pyarrow.fs; every path argument is relative to the run."""

    def __init__(self, uri: str):
        import pyarrow
        from pyarrow import fs as pafs

        try:
            self.fs, self.base = pafs.FileSystem.from_uri(uri)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError, ValueError) as err:
            raise StorageError(f"run.output_dir {uri}: cannot open it ({err})") from None
        self.uri, self.base = uri, self.base.rstrip("/")

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel.strip('/')}" if rel.strip("/") else self.base

    def read_text(self, rel: str) -> str | None:
        from pyarrow import fs as pafs

        if self.fs.get_file_info(self.path(rel)).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read().decode()

    def write_text(self, rel: str, text: str) -> None:
        def put() -> None:
            with self.fs.open_output_stream(self.path(rel)) as f:
                f.write(text.encode())

        _retry(put, f"writing {self.uri}/{rel}")

    def put_file(self, local: Path, rel: str) -> None:
        def put() -> None:
            with open(local, "rb") as src, self.fs.open_output_stream(self.path(rel)) as dst:
                shutil.copyfileobj(src, dst, 8 << 20)

        _retry(put, f"uploading {local} to {self.uri}/{rel}")

    def get_file(self, rel: str, local: Path) -> None:
        def get() -> None:
            local.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(self.path(rel)) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)

        _retry(get, f"downloading {self.uri}/{rel}")

    def files(self, rel: str) -> list[str]:
        """Every file under `rel`, relative to it (recursive; [] when there is none)."""
        from pyarrow import fs as pafs

        base = self.path(rel)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path[len(base):].lstrip("/") for i in infos if i.type == pafs.FileType.File)

    def children(self, rel: str) -> list[str]:
        """Names directly under `rel`."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def is_dir(self, rel: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_dir(self.path(rel))
        except (FileNotFoundError, OSError) as err:
            log.warning("could not delete %s/%s: %s", self.uri, rel, err)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _mirrored(rel: Path) -> bool:
    """Not a checkpoint (a pipeline round's run dir sends its own, in order), a marker, nor a temp file."""
    return not (NOT_MIRRORED & set(rel.parts)) and not any(part.endswith(".tmp") for part in rel.parts)


def push_dir(remote: Remote, local: Path, rel: str, last: Iterable[str] = (MANIFEST,),
             only: list[Path] | None = None) -> None:
    """Upload `local` (or the files `only`) to `rel`: names in `last` after the others, then _COMPLETE.

    An earlier upload's marker goes first, so that the dir reads incomplete until every new file is up."""
    if remote.read_text(_join(rel, COMPLETE)) is not None:
        remote.fs.delete_file(remote.path(_join(rel, COMPLETE)))
    last = set(last)
    chosen = only if only is not None else [p for p in local.rglob("*") if p.is_file()]
    files = sorted(chosen, key=lambda p: (p.name in last, p.as_posix()))
    for path in files:
        remote.put_file(path, _join(rel, path.relative_to(local).as_posix()))
    remote.write_text(_join(rel, COMPLETE), "")


def push_checkpoint(root: Path, name: str, keep: Iterable[str]) -> None:
    """Mirror checkpoint `root/name` (MANIFEST last, then the tracker), then drop remote ones not in `keep`."""
    found = remote_of(root)
    if found is None:
        return
    started, (uri, rel) = time.perf_counter(), found
    remote = Remote(uri)
    push_dir(remote, root / name, _join(rel, name))
    remote.write_text(_join(rel, "latest"), name)  # last: a cut-short upload is never the latest
    keep = set(keep)
    for old in remote.children(rel):
        if old.startswith("step_") and old not in keep and old < name:
            remote.delete(_join(rel, old))
    push_outputs(root.parent)  # metrics so far, so that a resume elsewhere keeps the history
    log.info("checkpoint %s uploaded to %s/%s in %.1fs", name, uri, _join(rel, name), time.perf_counter() - started)


def fetch_checkpoint(root: Path) -> str | None:
    """Bring the newest complete remote checkpoint into `root` when it is not here; returns its name."""
    found = remote_of(root)
    if found is None:
        return None
    uri, rel = found
    remote = Remote(uri)
    tracked = (remote.read_text(_join(rel, "latest")) or "").strip()
    steps = sorted((n for n in remote.children(rel) if n.startswith("step_")), reverse=True)
    for name in dict.fromkeys([tracked] * bool(tracked) + steps):
        if remote.read_text(_join(rel, name, COMPLETE)) is None:
            log.warning("remote checkpoint %s/%s is incomplete (upload cut short): skipped", uri, _join(rel, name))
            continue
        if not (root / name / MANIFEST).is_file():
            tmp = root / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            for file in remote.files(_join(rel, name)):
                if file != COMPLETE:
                    remote.get_file(_join(rel, name, file), tmp / file)
            shutil.rmtree(root / name, ignore_errors=True)
            tmp.rename(root / name)
            log.info("checkpoint %s downloaded from %s", name, uri)
        tracker = root / "latest"
        if not tracker.is_file() or tracker.read_text().strip() < name:
            (root / "latest.tmp").write_text(name)
            (root / "latest.tmp").replace(tracker)
        _fetch_run_file(remote, root.parent, "metrics.jsonl")
        return name
    return None


def _fetch_run_file(remote: Remote, run_dir: Path, name: str) -> None:
    """A run-level file (metrics.jsonl) from the remote when the staging dir has none (a fresh node)."""
    found = remote_of(run_dir)
    if found is None or (run_dir / name).exists():
        return
    rel = _join(found[1], name)
    if remote.read_text(rel) is not None:
        remote.get_file(rel, run_dir / name)


def _stamp(run_dir: Path, entry: Path) -> dict[str, list[int]]:
    """Size and mtime of each mirrored file of `entry` (a file or a dir of the run), by path in the run."""
    files = [p for p in entry.rglob("*") if p.is_file() and _mirrored(p.relative_to(entry))] \
        if entry.is_dir() else [entry]
    return {p.relative_to(run_dir).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def push_outputs(run_dir: Path) -> None:
    """Mirror a staged run's files (all but checkpoints/) to its URI; unchanged files are not sent again."""
    found = remote_of(run_dir)
    if found is None:
        return
    uri, rel = found
    remote = Remote(uri)
    record_path = Path(run_dir) / PUSHED
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for entry in sorted(Path(run_dir).iterdir()):
        if entry.name in NOT_MIRRORED or entry.name.endswith(".tmp"):
            continue
        stamp = _stamp(Path(run_dir), entry)
        files = [Path(run_dir) / name for name in stamp]
        if all(record.get(k) == v for k, v in stamp.items()):
            continue
        if entry.is_dir():
            push_dir(remote, entry, _join(rel, entry.name), last=(), only=files)
        else:
            remote.put_file(entry, _join(rel, entry.name))
        record.update(stamp)
        record_path.write_text(json.dumps(record))
    log.info("run outputs mirrored to %s", _join(uri, rel))


def pull_run(run: str, dest: Path) -> list[str]:
    """Copy the exported policy, metrics, summary and report of `run` (a URI or a run dir) into `dest`."""
    if is_uri(run):
        try:
            got = _pull_remote(Remote(run.rstrip("/")), dest)
        except OSError as err:  # no such bucket, endpoint unreachable, access denied
            raise StorageError(f"{run}: {err}") from None
    else:
        got = _pull_local(local_path(run), dest)
    if not got:
        raise StorageError(f"{run}: no run outputs there (looked for {', '.join(PULLED)})")
    return got


def fetch_run(run: str, names: Iterable[str]) -> Path:
    """The local dir a command reads run `run` from: a local run dir as it is; for a URI, its staging dir
    with the `names` the URI has pulled into it, marked so that push_outputs sends back what the command adds.

    For `rlhf-dist eval` / `report` on a run kept in object storage; StorageError when the URI holds none."""
    if not is_uri(run):
        return local_path(run)
    uri, names = run.rstrip("/"), list(names)
    local = staging_dir(uri)
    try:
        got = _pull_remote(Remote(uri), local, names)
    except OSError as err:  # no such bucket, endpoint unreachable, access denied
        raise StorageError(f"{run}: {err}") from None
    if not got:
        raise StorageError(f"{run}: no run there (looked for {', '.join(names)})")
    (local / MARKER).write_text(json.dumps({"uri": uri}) + "\n")
    record_path = local / PUSHED  # what came down is already up there: not sent back unless changed
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for name in got:
        record.update(_stamp(local, local / name))
    record_path.write_text(json.dumps(record))
    return local


def _pull_remote(remote: Remote, dest: Path, names: Iterable[str] = PULLED) -> list[str]:
    got, present = [], set(remote.children(""))
    for name in names:
        if name not in present:
            continue
        files = remote.files(name) if remote.is_dir(name) else []
        if files and COMPLETE not in files:
            log.warning("%s/%s is incomplete (its upload was cut short or is running): skipped", remote.uri, name)
            continue
        tmp = dest / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for file in files or [""]:
            if file != COMPLETE:
                remote.get_file(_join(name, file), tmp / file if file else tmp)
        _replace(tmp, dest / name)
        got.append(name)
    return got


def _pull_local(source: Path, dest: Path) -> list[str]:
    if not source.is_dir():
        raise StorageError(f"{source}: no such run directory")
    got = []
    for name in PULLED:
        if (source / name).exists():
            tmp = dest / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            dest.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (source / name).is_dir() else shutil.copy2)(source / name, tmp)
            _replace(tmp, dest / name)
            got.append(name)
    return got


def _replace(tmp: Path, final: Path) -> None:
    if final.is_dir():
        shutil.rmtree(final)
    tmp.replace(final)
