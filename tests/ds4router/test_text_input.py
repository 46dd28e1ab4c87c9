"""Every input path reads text in any recognisable encoding, or refuses in one line.

Real files and real subprocesses of the CLI: a Latin-1 ``.ds4router.yaml``, a
UTF-16 price sheet, binary stdin; the refusal names the file (or stdin), exits 2
and prints no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ds4router.textio import UnreadableInput, read_text_any

REPO = Path(__file__).resolve().parents[2]


def assert_refused(out: subprocess.CompletedProcess[str], source: str) -> None:
    """Exit 2 and one line naming ``source``, saying why and what to do."""
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {source}: not readable as text (")
    assert lines[0].endswith("; save it as UTF-8 text")


def ds4(
    *argv: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "ds4router", *argv],
        input=stdin,
        capture_output=True,
        cwd=cwd or REPO,
        env=env,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


@pytest.mark.parametrize(
    ("data", "text", "encoding"),
    [
        ("café crème".encode(), "café crème", "utf-8"),
        ("\ufeffcafé".encode(), "café", "utf-8"),
        ("café au lait\n".encode("latin-1"), "café au lait\n", "cp1252"),
        # 14 bytes, even: the detector's first guess is BOM-less UTF-16; it is Latin-1.
        ("project: café\n".encode("latin-1"), "project: café\n", "cp1252"),
        ("name: Zürich\n".encode("latin-1"), "name: Zürich\n", "cp1252"),
        ("Привет мир, как дела".encode("cp1251"), "Привет мир, как дела", "cp1251"),
        ("budget: 5 €".encode("utf-16"), "budget: 5 €", "utf-16-le"),
        ("budget: 5 €".encode("utf-16-be"), "budget: 5 €", "utf_16_be"),
    ],
)
def test_text_in_a_known_encoding_is_read(data: bytes, text: str, encoding: str) -> None:
    got, found = read_text_any(data, "sample")
    assert got == text
    assert found.replace("_", "-").lower() == encoding.replace("_", "-").lower()


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, b"abc\x00def", os.urandom(0) + bytes(range(32))],
)
def test_binary_is_refused_naming_the_source(data: bytes) -> None:
    with pytest.raises(UnreadableInput) as caught:
        read_text_any(data, "stdin")
    message = str(caught.value)
    assert message.startswith("stdin: not readable as text")
    assert "UTF-8" in message and "\n" not in message
    assert caught.value.exit_code == 2


def test_a_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInput, match=r"cannot read \(Is a directory\)"):
        read_text_any(tmp_path)


def test_a_latin1_project_config_is_read(tmp_path: Path) -> None:
    project = tmp_path / "zurich"
    project.mkdir()
    (project / ".ds4router.yaml").write_bytes(
        "project: Zürich\ndefault: local\n# prix en €uros: café\n".encode("cp1252")
    )
    out = ds4("config", "validate", str(project / ".ds4router.yaml"))
    assert out.returncode == 0, out.stderr
    shown = ds4("config", "show", "--project", str(project))
    assert shown.returncode == 0, shown.stderr
    assert "Zürich" in shown.stdout
    assert "Traceback" not in shown.stderr + out.stderr


def test_a_binary_config_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"project: x\n\x00\x01\x02\xff\xfe")
    out = ds4("config", "validate", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {bad}: not readable as text (it holds binary data); save it as UTF-8 text"
    ]


def test_binary_stdin_is_refused_before_routing(tmp_path: Path) -> None:
    out = ds4("route", "-", stdin=b"\x7fELF\x02\x01\x01\x00" + bytes(range(64)), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: stdin: not readable as text (it holds binary data); save it as UTF-8 text"
    ]


def test_latin1_stdin_is_routed(tmp_path: Path) -> None:
    out = ds4("route", "-", stdin="résumé of the café's menu\n".encode("latin-1"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_a_utf16_price_sheet_is_read_and_a_binary_one_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "mine.yaml"
    body = (
        "as_of: 2026-11-01\nsource: négocié avec le fournisseur\n"
        "models:\n  acme/small:\n    input: 1.0\n    output: 2.0\n"
    )
    sheet.write_bytes(body.encode("utf-16"))
    out = ds4(
        "estimate", "--output-tokens", "1000000", "--prices", str(sheet), "--models", "acme/small"
    )
    assert out.returncode == 0, out.stderr
    assert "acme/small" in out.stdout
    sheet.write_bytes(b"\x00\x00binary\xff" * 10)
    out = ds4("estimate", "--output-tokens", "1000000", "--prices", str(sheet))
    assert out.returncode == 2
    assert_refused(out, str(sheet))


def test_a_click_usage_error_is_one_line() -> None:
    out = ds4("report", "--no-such-flag")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: No such option") and "--no-such-flag" in lines[0]
    assert "ds4router report --help" in lines[0]
