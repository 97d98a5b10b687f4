"""Does this environment satisfy every direct pin? Run by `make setup` and docker/Dockerfile after
installing a lock with --no-deps: a pin edited in requirements/*.txt without `make lock` fails here
(offline, nothing is installed). Usage: python requirements/check_pins.py FILE.txt [FILE.txt ...]"""

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement


def pins(path: Path) -> list[Requirement]:
    """The requirement lines of a pin file (comments, blank lines and pip options skipped)."""
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]


def problems(path: Path) -> list[str]:
    """One line per pin of `path` that the installed packages do not satisfy."""
    out = []
    for req in pins(path):
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            out.append(f"{path}: pins {req}, installed {have or 'nothing'} (lock out of date: run make lock)")
    return out


def main(argv: list[str]) -> int:
    found = [line for arg in argv for line in problems(Path(arg))]
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
