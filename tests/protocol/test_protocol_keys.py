"""Key pair helper: generate, PEM and PASERK round-trips, key files, interoperability."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pyseto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocol import base64url
from protocol.errors import KeyFormatError
from protocol.keys import SigningKey, VerifyingKey

if TYPE_CHECKING:
    from pathlib import Path


def test_pem_round_trip_keeps_the_key() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_pem(key.to_pem())
    assert again.to_paserk() == key.to_paserk()
    assert again.key_id == key.key_id


def test_paserk_round_trip_keeps_the_key() -> None:
    key = SigningKey.generate()
    assert key.to_paserk().startswith("k4.secret.")
    assert SigningKey.from_paserk(key.to_paserk()).key_id == key.key_id


def test_public_key_exports_as_paserk_and_pem() -> None:
    public = SigningKey.generate().verifying_key
    assert public.to_paserk().startswith("k4.public.")
    assert VerifyingKey.from_paserk(public.to_paserk()) == public
    assert VerifyingKey.from_pem(public.to_pem()) == public
    assert public.key_id.startswith("k4.pid.")


def test_paserk_forms_match_the_reference_library() -> None:
    key = SigningKey.generate()
    reference_secret = pyseto.Key.from_paserk(key.to_paserk())
    assert reference_secret.to_paserk() == key.to_paserk()
    assert reference_secret.to_peer_paserk_id() == key.key_id
    reference_public = pyseto.Key.from_paserk(key.verifying_key.to_paserk())
    assert reference_public.to_paserk_id() == key.key_id


def test_distinct_keys_have_distinct_ids() -> None:
    assert SigningKey.generate().key_id != SigningKey.generate().key_id


@pytest.mark.parametrize("fmt", ["pem", "paserk"])
def test_save_then_load(tmp_path: Path, fmt: str) -> None:
    key = SigningKey.generate()
    path = tmp_path / "hub-signing.key"
    key.save(path, fmt=fmt)  # type: ignore[arg-type]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path).key_id == key.key_id


def test_save_refuses_to_replace_a_key_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "hub-signing.key"
    first, second = SigningKey.generate(), SigningKey.generate()
    first.save(path)
    with pytest.raises(FileExistsError):
        second.save(path)
    assert SigningKey.load(path).key_id == first.key_id
    second.save(path, overwrite=True)
    assert SigningKey.load(path).key_id == second.key_id


def test_load_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.key"
    path.write_bytes(b"\xff\x00\x01")
    with pytest.raises(KeyFormatError):
        SigningKey.load(path)


@pytest.mark.parametrize(
    "paserk",
    [
        "k4.public.AAAA",
        "k3.secret.AAAA",
        "k4.secret.not*base64",
        "k4.secret." + base64url.encode(b"\x01" * 32),
    ],
)
def test_bad_secret_paserk_is_refused(paserk: str) -> None:
    with pytest.raises(KeyFormatError):
        SigningKey.from_paserk(paserk)


def test_secret_paserk_with_a_foreign_public_half_is_refused() -> None:
    seed_half = base64url.decode(SigningKey.generate().to_paserk().removeprefix("k4.secret."))[:32]
    public_half = base64url.decode(SigningKey.generate().verifying_key.paserk[10:])
    with pytest.raises(KeyFormatError):
        SigningKey.from_paserk("k4.secret." + base64url.encode(seed_half + public_half))


@pytest.mark.parametrize(
    "paserk", ["k4.secret.AAAA", "k4.public.AAAA", "k4.public.", "v4.public.x"]
)
def test_bad_public_paserk_is_refused(paserk: str) -> None:
    with pytest.raises(KeyFormatError):
        VerifyingKey.from_paserk(paserk)


def test_non_ed25519_pem_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    private_pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError):
        SigningKey.from_pem(private_pem)
    with pytest.raises(KeyFormatError):
        VerifyingKey.from_pem(public_pem)
    with pytest.raises(KeyFormatError):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")


def test_repr_never_shows_the_secret() -> None:
    key = SigningKey.generate()
    secret_part = key.to_paserk().removeprefix("k4.secret.")
    assert secret_part not in repr(key)
    assert key.key_id in repr(key)


@pytest.mark.parametrize("text", ["a=", "a", "ab+c", "ab/c", "ab c", "AB=="])
def test_base64url_refuses_non_canonical_text(text: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        base64url.decode(text)


def test_base64url_refuses_unused_bits() -> None:
    # "AB" and "AA" would both decode to b"\x00" in a lenient decoder.
    assert base64url.decode("AA") == b"\x00"
    with pytest.raises(ValueError, match="canonical"):
        base64url.decode("AB")
