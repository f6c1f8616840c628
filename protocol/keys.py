"""Ed25519 keys for signing commands (hub) and verifying them (vehicles), in PEM or PASERK."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final, Literal

import pyseto
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import base64url
from protocol.errors import KeyFormatError

if TYPE_CHECKING:
    from pathlib import Path

    from pyseto import KeyInterface

PASERK_PUBLIC_PREFIX: Final = "k4.public."
PASERK_SECRET_PREFIX: Final = "k4.secret."  # noqa: S105 - a format prefix, not a secret

# A secret key file is readable by its owner only.
_SECRET_FILE_MODE: Final = 0o600


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class VerifyingKey:
    """An Ed25519 public key that vehicles trust to sign commands, named by its key id."""

    __slots__ = ("_paseto", "_public", "key_id", "paserk")

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._public = public_key
        self._paseto: KeyInterface = pyseto.Key.from_asymmetric_key_params(
            4, x=_raw_public(public_key)
        )
        self.paserk: str = PASERK_PUBLIC_PREFIX + base64url.encode(_raw_public(public_key))
        # The PASERK id (`k4.pid.`) is a hash of the public key: a token's footer names it so
        # the vehicle picks the right key among several trusted during a rotation.
        self.key_id: str = self._paseto.to_paserk_id()

    @classmethod
    def from_paserk(cls, paserk: str) -> VerifyingKey:
        """Load a public key from its PASERK form, `k4.public.<base64url>`."""
        paserk = paserk.strip()
        if not paserk.startswith(PASERK_PUBLIC_PREFIX):
            raise KeyFormatError("a verifying key must be a PASERK starting with 'k4.public.'")
        try:
            raw = base64url.decode(paserk.removeprefix(PASERK_PUBLIC_PREFIX))
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as exc:
            raise KeyFormatError("the k4.public PASERK does not hold an Ed25519 key") from exc

    @classmethod
    def from_pem(cls, pem: bytes) -> VerifyingKey:
        """Load a public key from a PEM `PUBLIC KEY` block."""
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError("the PEM public key is not an Ed25519 key")
        return cls(key)

    def to_paserk(self) -> str:
        """Export as PASERK `k4.public.`, the form to provision into vehicles."""
        return self.paserk

    def to_pem(self) -> bytes:
        """Export as a PEM `PUBLIC KEY` block."""
        return self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def as_pyseto(self) -> KeyInterface:
        """The same key as a pyseto key, for verifying tokens."""
        return self._paseto

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyingKey) and other.paserk == self.paserk

    def __hash__(self) -> int:
        return hash(self.paserk)

    def __repr__(self) -> str:
        return f"VerifyingKey(key_id={self.key_id!r})"


class SigningKey:
    """An Ed25519 private key the hub signs commands with."""

    __slots__ = ("_paseto", "_private", "verifying_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._paseto: KeyInterface = pyseto.Key.from_asymmetric_key_params(4, d=self._raw_seed())
        self.verifying_key = VerifyingKey(private_key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """Create a new random key."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> str:
        """The PASERK id of the matching public key, written in every token's footer."""
        return self.verifying_key.key_id

    def _raw_seed(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        """Load an unencrypted PKCS#8 PEM `PRIVATE KEY` block."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError("not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFormatError("the PEM private key is not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> bytes:
        """Export as an unencrypted PKCS#8 PEM `PRIVATE KEY` block."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_paserk(cls, paserk: str) -> SigningKey:
        """Load a PASERK `k4.secret.` key (the 32-byte seed followed by the public key)."""
        paserk = paserk.strip()
        if not paserk.startswith(PASERK_SECRET_PREFIX):
            raise KeyFormatError("a signing key PASERK must start with 'k4.secret.'")
        try:
            raw = base64url.decode(paserk.removeprefix(PASERK_SECRET_PREFIX))
        except ValueError as exc:
            raise KeyFormatError("the k4.secret PASERK is not base64url") from exc
        if len(raw) != 64:
            raise KeyFormatError("a k4.secret PASERK holds 64 bytes")
        private_key = Ed25519PrivateKey.from_private_bytes(raw[:32])
        # The second half repeats the public key; a mismatch means a corrupted or spliced key.
        if _raw_public(private_key.public_key()) != raw[32:]:
            raise KeyFormatError("the k4.secret PASERK's public half does not match its seed")
        return cls(private_key)

    def to_paserk(self) -> str:
        """Export as PASERK `k4.secret.`."""
        raw = self._raw_seed() + _raw_public(self._private.public_key())
        return PASERK_SECRET_PREFIX + base64url.encode(raw)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key file written by `save`, in either PEM or PASERK form."""
        data = path.read_bytes()
        if data.lstrip().startswith(b"-----BEGIN"):
            return cls.from_pem(data)
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise KeyFormatError(f"{path.name} is neither PEM nor PASERK") from exc
        return cls.from_paserk(text)

    def save(
        self, path: Path, *, fmt: Literal["pem", "paserk"] = "pem", overwrite: bool = False
    ) -> None:
        """Write the key to a file only its owner can read; refuse to replace one unless asked."""
        data = self.to_pem() if fmt == "pem" else (self.to_paserk() + "\n").encode("ascii")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        # Created with owner-only permissions from the start, so the secret is never readable
        # by others, even for an instant.
        descriptor = os.open(path, flags, _SECRET_FILE_MODE)
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), _SECRET_FILE_MODE)
            file.write(data)

    def as_pyseto(self) -> KeyInterface:
        """The same key as a pyseto key, for signing tokens."""
        return self._paseto

    def __repr__(self) -> str:
        # Never the secret itself: keys end up in logs through reprs.
        return f"SigningKey(key_id={self.key_id!r})"
