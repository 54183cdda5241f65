"""API keys: the file the operator owns (CONVZOO_API_KEYS_FILE), its schema, and who a secret belongs to.

The file holds no secret: each key's secret is stored as its SHA-256, which is enough for a key made of
32 random bytes (a slow hash such as argon2 guards low-entropy passwords, and would cost tens of
milliseconds per request). A presented secret is hashed and compared with `hmac.compare_digest`, in
constant time. `python -m service.access.keys new ID --scopes infer,read` makes a key and prints its entry.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["infer", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("infer", "read", "admin")
PREFIX = "czk_"  # made keys start with it, so a leaked one is recognisable (secret scanners)
_KEY_ID = r"^[A-Za-z0-9._-]{1,64}$"  # safe in logs and as a metric label


class Rate(BaseModel):
    """A key's quota: a token bucket of requests and one of images, each refilled per second up to `burst`
    seconds' worth (at least one request and one image)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_s: float = Field(gt=0)
    images_per_s: float | None = Field(default=None, gt=0)  # None: no image quota
    burst_s: float = Field(default=1.0, gt=0)


class Key(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_KEY_ID)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: frozenset[Scope]
    models: frozenset[str] | None = None  # None: every model
    rate: Rate | None = None  # None: no quota
    expires: dt.datetime | None = None

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires needs a time zone, e.g. 2027-01-31T00:00:00Z")
        return value

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def allows(self, scope: Scope) -> bool:
        """`admin` includes `read`: an operator who may load models may read their state."""
        return scope in self.scopes or (scope == "read" and "admin" in self.scopes)

    def allows_model(self, name: str) -> bool:
        return self.models is None or name in self.models


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[Key] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[Key]) -> list[Key]:
        for attr in ("id", "sha256"):
            values = [getattr(k, attr) for k in keys]
            if len(values) != len(set(values)):
                raise ValueError(f"two keys have the same {attr}")
        return keys


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class KeyRing:
    """The keys of one file, looked up by secret."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self._by_digest: Mapping[str, Key] = {k.sha256: k for k in keys}

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """The keys file at `path`; raises ValueError (naming the file) when it is not valid."""
        try:
            raw = yaml.safe_load(path.read_text()) or {}
            return cls(KeysFile.model_validate(raw).keys)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise ValueError(f"the API keys file {path} is not valid: {exc}") from exc

    def find(self, secret: str) -> Key | None:
        """The key whose secret this is, or None. The lookup is by the secret's SHA-256 (which tells an
        attacker nothing of a stored one); the match is confirmed by a constant-time comparison."""
        presented = digest(secret)
        key = self._by_digest.get(presented)
        if key is None or not hmac.compare_digest(key.sha256, presented):
            return None
        return key


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _new(args: argparse.Namespace) -> None:
    secret = new_secret()
    entry: dict[str, object] = {
        "id": args.id,
        "sha256": digest(secret),
        "scopes": sorted(s.strip() for s in args.scopes.split(",") if s.strip()),
    }
    if args.models:
        entry["models"] = sorted(m.strip() for m in args.models.split(",") if m.strip())
    if args.requests_per_s:
        rate: dict[str, float] = {"requests_per_s": args.requests_per_s}
        if args.images_per_s:
            rate["images_per_s"] = args.images_per_s
        entry["rate"] = rate
    Key.model_validate(entry)  # the same checks as the service's
    print(f"# the secret, shown once; give it to the client:\n# {secret}", file=sys.stderr)
    print(yaml.safe_dump({"keys": [entry]}, sort_keys=False), end="")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.access.keys", description="API keys (docs/auth.md)"
    )
    commands = parser.add_subparsers(required=True)
    new = commands.add_parser("new", help="make a key: the secret on stderr, its entry on stdout")
    new.add_argument("id")
    new.add_argument("--scopes", default="infer,read", help="comma-separated: infer, read, admin")
    new.add_argument("--models", default="", help="comma-separated model names (default: every model)")
    new.add_argument("--requests-per-s", type=float, default=0.0)
    new.add_argument("--images-per-s", type=float, default=0.0)
    new.set_defaults(run=_new)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
