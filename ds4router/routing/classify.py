"""From what the user typed and attached to what the router decides on."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ds4router.config.schema import Config
from ds4router.errors import Ds4RouterError
from ds4router.routing.attachments import decode_attachment
from ds4router.routing.privacy import classify_privacy
from ds4router.routing.request import Attachment, Request, path_mentions
from ds4router.routing.router import Classified
from ds4router.routing.scan.pieces import Piece
from ds4router.routing.tasks import classify_task

MAX_ATTACHMENT_BYTES = 4 * 1024 * 1024


def classify(request: Request, config: Config, context: Sequence[Piece] = ()) -> Classified:
    """``request`` classified; ``context``: the conversation's earlier pieces, scanned too."""
    privacy = classify_privacy(request.text, request.attachments, config.privacy, context)
    task = classify_task(request.text, config.classifier)
    return Classified(
        privacy=privacy, task=task, tokens=request_tokens(request, config), model=request.model
    )


def request_tokens(request: Request, config: Config) -> int:
    """What the ``min_tokens``/``max_tokens`` rules compare: the request's text and
    attachments counted by the local engine's tokenizer (the rules pick the target, so
    no target's tokenizer can be asked first; an estimate that errs high without one)."""
    from ds4router.targets import LocalEngine
    from ds4router.token_count import count

    parts = [request.text, *(a.text for a in request.attachments)]
    messages = [{"role": "user", "content": part} for part in parts if part]
    if not messages:
        return 0
    return count(LocalEngine(), messages, local_model_path=config.local.engine.model_path).tokens


def load_attachments(
    text: str, files: Sequence[str | Path], project_dir: Path | None, cwd: Path | None = None
) -> tuple[Attachment, ...]:
    """Read ``--file`` paths (must exist) and ``@path`` mentions (when they name a file).

    Paths are recorded relative to the project directory when inside it, so that
    ``privacy.paths`` globs apply to them.
    """
    base = cwd or Path.cwd()
    out: dict[Path, Attachment] = {}
    for name in files:
        given = Path(os.path.abspath(base / Path(name).expanduser()))
        path = given.resolve()
        if not path.is_file():
            raise Ds4RouterError(f"--file {name}: no such file")
        out.setdefault(path, _read(given, path, project_dir, str(name)))
    for mention in path_mentions(text):
        for root in (project_dir, base):
            if root is None:
                continue
            given = Path(os.path.abspath(root / mention))
            path = given.resolve()
            if path.is_file():
                out.setdefault(path, _read(given, path, project_dir, "@" + mention))
                break
    return tuple(out.values())


def _relative(path: Path, project_dir: Path | None) -> str:
    if project_dir is None:
        return str(path)
    for root in (Path(os.path.abspath(project_dir)), project_dir.resolve()):
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(path)


def _read(given: Path, path: Path, project_dir: Path | None, label: str) -> Attachment:
    """Read ``path`` (``given`` with symlinks resolved); both names are kept for the globs."""
    try:
        size = path.stat().st_size
        if size > MAX_ATTACHMENT_BYTES:
            raise Ds4RouterError(
                f"{label}: {size / 1e6:.1f} MB is too large to attach "
                f"(limit {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise Ds4RouterError(f"{label}: cannot read ({exc.strerror})") from None
    decoded = decode_attachment(data, label)
    rel, real = _relative(given, project_dir), _relative(path, project_dir)
    return Attachment(
        rel, decoded.text, resolved=real if real != rel else None, unreadable=decoded.unreadable
    )
