"""The same scan over every piece of text a request carries (the gateway relies on this)."""

from __future__ import annotations

import json
from pathlib import Path

from ds4router.config import load_config
from ds4router.config.schema import PathRule
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.privacy import classify_conversation, classify_privacy
from ds4router.routing.request import Attachment
from ds4router.routing.scan.pieces import Piece, PieceKind, pieces_from_chat
from ds4router.sessions.conversation import ContextTurn, context_pieces

CONFIG = load_config(cwd=Path("/")).config.privacy
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def _where(body: dict) -> dict[str, PieceKind]:
    pieces = pieces_from_chat(body["messages"], tools=body.get("tools"), system=body.get("system"))
    result = classify_conversation(pieces, CONFIG)
    assert result.level is PrivacyLevel.SECRET
    rendered = json.dumps([f.to_dict() for f in result.findings]) + repr(result)
    assert GH not in rendered
    return {f.where or "": f.kind for f in result.findings}


def test_a_secret_anywhere_in_an_openai_body_is_found_and_placed() -> None:
    places = {
        "system": {"role": "system", "content": f"deploy with {GH}"},
        "tool call": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "login", "arguments": json.dumps({"token": GH})}}
            ],
        },
        "tool result": {"role": "tool", "tool_call_id": "c1", "content": f"GITHUB_TOKEN={GH}\n"},
        "part": {"role": "user", "content": [{"type": "text", "text": f"use {GH}"}]},
    }  # fmt: skip
    expected = {
        "system": ("messages[0].content", PieceKind.SYSTEM),
        "tool call": ("messages[0].tool_calls[0]", PieceKind.TOOL_CALL),
        "tool result": ("messages[0].content", PieceKind.TOOL_RESULT),
        "part": ("messages[0].content[0]", PieceKind.USER),
    }
    for name, message in places.items():
        where, kind = expected[name]
        assert _where({"messages": [{"role": "user", "content": "hi"}, message][1:]}) == {
            where: kind
        }, name
    tool = {"type": "function", "function": {"name": "x", "description": f"auth {GH}"}}
    assert _where({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]}) == {
        "tools[0]": PieceKind.TOOL_DEFINITION
    }


def test_anthropic_blocks_and_top_level_system() -> None:
    body = {
        "system": [{"type": "text", "text": f"key {GH}"}],
        "messages": [
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t", "name": "sh", "input": {"cmd": f"echo {GH}"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": GH}]}]},
        ],
    }  # fmt: skip
    assert _where(body) == {
        "system[0]": PieceKind.SYSTEM,
        "messages[0].content[0]": PieceKind.TOOL_CALL,
        "messages[1].content[0].content[0]": PieceKind.TOOL_RESULT,
    }


def test_unreadable_content_is_never_public() -> None:
    config = CONFIG.model_copy(update={"default": PrivacyLevel.PUBLIC})
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    pieces = pieces_from_chat(
        [{"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}]
    )
    assert [p.unreadable for p in pieces] == [False, True]
    result = classify_conversation(pieces, config)
    assert result.level is PrivacyLevel.CONFIDENTIAL
    assert any("privacy.unreadable" in c.source for c in result.contributions)
    plain = classify_conversation(pieces_from_chat([{"role": "user", "content": "hi"}]), config)
    assert plain.level is PrivacyLevel.PUBLIC


def test_earlier_turns_of_a_conversation_are_scanned() -> None:
    context = context_pieces(
        [ContextTurn("what is in .env?", f"It holds GH_TOKEN={GH}.", PrivacyLevel.PUBLIC)]
    )
    result = classify_privacy("and now summarise it", [], CONFIG, context)
    assert result.level is PrivacyLevel.SECRET
    assert [(f.where, f.kind) for f in result.findings] == [
        ("earlier turn 1 (answer)", PieceKind.ASSISTANT)
    ]


def test_request_text_findings_have_no_place_label() -> None:
    result = classify_privacy(f"token {GH}", [Attachment("a.txt", "x")], CONFIG)
    assert [f.where for f in result.findings] == [None]
    assert result.findings[0].to_dict()["where"] == "text"


def test_pieces_label_every_source() -> None:
    pieces = pieces_from_chat(
        [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q", "name": "bob"}]
    )
    assert pieces == [
        Piece(PieceKind.SYSTEM, "messages[0].content", "rules"),
        Piece(PieceKind.USER, "messages[1].content", "q"),
        Piece(PieceKind.USER, "messages[1].name", "bob"),
    ]


def test_path_globs_match_the_given_and_the_resolved_path(tmp_path: Path) -> None:
    from ds4router.routing.classify import load_attachments

    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "prod.txt").write_text("nothing to see\n")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "secrets" / "prod.txt")
    (tmp_path / "keys.pem").symlink_to(tmp_path / "secrets" / "prod.txt")
    rules = [{"glob": "secrets/**", "level": "secret"}, {"glob": "*.pem", "level": "secret"}]
    config = CONFIG.model_copy(update={"paths": [PathRule(**r) for r in rules]})
    for name in ("notes.txt", "keys.pem"):
        files = load_attachments("look", [name], tmp_path, cwd=tmp_path)
        result = classify_privacy("look", files, config)
        assert result.level is PrivacyLevel.SECRET, name


def test_attachments_are_read_in_any_encoding_and_inside_archives(tmp_path: Path) -> None:
    import gzip
    import io
    import zipfile

    from ds4router.routing.classify import load_attachments

    env = f"DB_PASSWORD=Vq7#mT2!pLx9\nGH={GH}\n"
    (tmp_path / "utf16.env").write_bytes(env.encode("utf-16"))
    (tmp_path / "utf32.env").write_bytes(env.encode("utf-32"))
    (tmp_path / "env.gz").write_bytes(gzip.compress(env.encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("conf/.env", env.encode("utf-16"))
    (tmp_path / "bundle.zip").write_bytes(buffer.getvalue())
    public = CONFIG.model_copy(update={"default": PrivacyLevel.PUBLIC})
    for name in ("utf16.env", "utf32.env", "env.gz", "bundle.zip"):
        (attachment,) = load_attachments("look", [name], tmp_path, cwd=tmp_path)
        assert not attachment.unreadable, name
        result = classify_privacy("look", [attachment], public)
        assert result.level is PrivacyLevel.SECRET, name
        assert {f.finding.kind for f in result.findings} >= {"github_token"}, name


def test_unreadable_attachments_are_never_public(tmp_path: Path) -> None:
    from ds4router.routing.classify import load_attachments

    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 8 + b"\x00token=" + GH.encode())
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    public = CONFIG.model_copy(update={"default": PrivacyLevel.PUBLIC})
    for name in ("blob.bin", "broken.gz"):
        (attachment,) = load_attachments("look", [name], tmp_path, cwd=tmp_path)
        assert attachment.unreadable, name
        result = classify_privacy("look", [attachment], public)
        assert result.level >= PrivacyLevel.CONFIDENTIAL, name
    (blob,) = load_attachments("look", ["blob.bin"], tmp_path, cwd=tmp_path)
    # The printable strings of a binary are still scanned.
    assert classify_privacy("look", [blob], public).level is PrivacyLevel.SECRET
