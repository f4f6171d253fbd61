"""macOS codesign and Windows Authenticode parsing, against outputs recorded on real
machines (tests/fixtures/signing/, each file names its source on its first line).
This machine has neither tool, so only the parsing is tested here."""

from __future__ import annotations

from pathlib import Path

import pytest

from quintd.signing.darwin import parse_codesign
from quintd.signing.windows import parse_authenticode

FIXTURES = Path(__file__).parent / "fixtures" / "signing"


def recorded(name: str) -> str:
    text = (FIXTURES / name).read_text()
    assert text.startswith("# source: ")
    return text.split("\n", 1)[1]


def test_developer_id_signed_app() -> None:
    info = parse_codesign(recorded("codesign-dv-signed-app.txt"), verify_rc=0)
    assert info.signing_id == "io.packfiles.vault"
    assert (info.identifier, info.team_id, info.valid) == ("io.packfiles.vault", "LQ28J3F3JH", True)
    assert info.authorities == (
        "Developer ID Application: Packfiles Inc (LQ28J3F3JH)",
        "Developer ID Certification Authority",
        "Apple Root CA",
    )
    assert info.verified_identity == ("io.packfiles.vault", "LQ28J3F3JH")


def test_recent_macos_output() -> None:
    info = parse_codesign(recorded("codesign-dv-verbose4-codexbar-app.txt"), verify_rc=0)
    assert info.verified_identity == ("com.steipete.codexbar", "Y5PE65HELJ")


def test_adhoc_signed_binary() -> None:
    info = parse_codesign(recorded("codesign-dv-adhoc-linker-signed-rust.txt"), verify_rc=0)
    assert info.signing_id == "adhoc:build_script_build-1f72d3f9199ec0db"
    assert info.team_id is None and info.authorities == ()
    assert info.verified_identity is None  # ad-hoc vouches for nothing


def test_apple_platform_binary_without_team_is_not_adhoc() -> None:
    info = parse_codesign(recorded("codesign-dv-verbose4-apple-platform-siri-app.txt"), 0)
    assert info.signing_id == "com.apple.siri.launcher"
    assert info.authorities[0] == "Software Signing"
    assert info.verified_identity is None  # no team id to pair with


def test_unsigned_binary() -> None:
    info = parse_codesign(recorded("codesign-dv-unsigned.txt"), verify_rc=1)
    assert info.source == "unsigned" and info.signing_id is None  # the caller hashes it


def test_signature_that_fails_verification() -> None:
    # Anthropic's real identifier and authority, with `codesign --verify` failing as
    # recorded for a modified binary.
    display = recorded("codesign-claude-code-app-bundle-no-resources-PARTIAL.txt")
    display = display.split("$ codesign -dvvv", 1)[1]
    failure = recorded("codesign-verify-fail-invalid-signature-gh-cli.txt")
    info = parse_codesign(display, verify_rc=1, verify_text=failure)
    assert info.signing_id == "invalid:com.anthropic.claude-code"
    assert info.valid is False and info.verified_identity is None
    assert "invalid signature" in (info.detail or "")
    assert info.authorities == ("Developer ID Application: Anthropic PBC (Q6L2SF6YDW)",)


def test_missing_file_is_an_error_not_an_identity() -> None:
    # No recording of `codesign -dv` on a missing path was found; this is codesign's
    # documented "<path>: No such file or directory" form.
    info = parse_codesign("/nope/claude: No such file or directory\n", verify_rc=1)
    assert info.source == "error" and info.signing_id is None


@pytest.mark.parametrize(
    ("name", "signer", "thumbprint"),
    [
        (
            "authenticode-fl-valid-vscode.txt",
            "Microsoft Corporation",
            "8740DF4ACB749640AD318E4BE842F72EC651AD80",
        ),
        (
            "authenticode-fl-valid-catalog-osbinary.txt",
            "Microsoft Windows",
            "14590DC5C3AAF238FCFD7785B4B93F4071402C34",
        ),
    ],
)
def test_authenticode_valid(name: str, signer: str, thumbprint: str) -> None:
    text = recorded(name)
    text = text[text.index("SignerCertificate") :]  # drop the recorded prompt line
    info = parse_authenticode(text)
    assert (info.signing_id, info.valid, info.team_id) == (signer, True, thumbprint)
    assert info.detail == "Signature verified."
    assert info.authorities[0].startswith(f"CN={signer}, O=Microsoft Corporation")


def test_authenticode_not_signed() -> None:
    first_record = recorded("authenticode-fl-notsigned.txt").split("--- NSIS ---")[0]
    info = parse_authenticode(first_record)
    assert info.source == "unsigned" and info.signing_id is None


def test_authenticode_hash_mismatch() -> None:
    info = parse_authenticode(recorded("authenticode-fl-hashmismatch.txt"))
    assert info.signing_id == "hashmismatch:Microsoft Corporation"
    assert info.valid is False
    assert "hash of the file does not match" in (info.detail or "")


def test_authenticode_unknown_error() -> None:
    second_record = recorded("authenticode-fl-notsigned-and-unknownerror-pwsh-issue.txt")
    second_record = second_record.split("\n\n", 1)[1]
    info = parse_authenticode(second_record)
    assert info.signing_id == "unknownerror:unknown signer" and info.valid is False


def test_garbage_is_an_error() -> None:
    assert parse_authenticode("nothing useful").source == "error"
    assert parse_codesign("", verify_rc=None).source == "error"
