"""Built-in task functions that run in the worker's process pool (and ``echo``, which runs in-process).

This module is imported by pool children: it must stay light (standard library only). Every function takes the
payload as bytes and returns bytes or str; it raises :class:`InvalidPayload` when the payload cannot be right for the
type (the submitter then fails the task at once instead of retrying a deterministic error elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import math
import time

DEFAULT_SHA256_ROUNDS = 100_000
MAX_SHA256_ROUNDS = 10**9
MAX_PRIME_RANGE = 10**9


class InvalidPayload(ValueError):
    """The payload is wrong for this task type; retrying on another worker cannot help."""


def echo(payload: bytes) -> bytes:
    return payload


def sha256_rounds(data: bytes, rounds: int) -> str:
    """``rounds`` iterations of sha256 starting from ``data``; hex of the last digest."""
    digest = data
    sha = hashlib.sha256
    for _ in range(rounds):
        digest = sha(digest).digest()
    return digest.hex()


def count_primes(lo: int, hi: int) -> int:
    """Primes p with lo <= p < hi (segmented sieve: real CPU work, exact, easy to check)."""
    lo = max(lo, 2)
    if hi <= lo:
        return 0
    root = math.isqrt(hi - 1)
    base = bytearray([1]) * (root + 1)
    base[0:2] = b"\x00\x00"[: min(2, root + 1)]
    for i in range(2, math.isqrt(root) + 1):
        if base[i]:
            base[i * i::i] = bytes(len(range(i * i, root + 1, i)))
    small = [i for i in range(2, root + 1) if base[i]]
    total = 0
    seg = 1 << 20
    for start in range(lo, hi, seg):
        end = min(start + seg, hi)
        sieve = bytearray([1]) * (end - start)
        for p in small:
            first = max(p * p, (start + p - 1) // p * p)
            if first >= end:
                continue
            sieve[first - start::p] = bytes(len(range(first - start, end - start, p)))
        total += sum(sieve)
    return total


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidPayload(f"{what} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise InvalidPayload(f"{what} must be an integer, got {value!r}") from None


def _parse_compute(payload: bytes) -> tuple[str | None, dict[str, object]]:
    text = payload.decode("utf-8", errors="replace").strip()
    op: str | None = None
    args: dict[str, object] = {}
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidPayload(f"payload looks like JSON but is not: {exc}") from None
        if not isinstance(doc, dict) or doc.get("op") not in ("sha256", "primes"):
            raise InvalidPayload('JSON payload needs "op": "sha256" or "primes"')
        op, args = str(doc["op"]), doc
    else:
        words = text.split(None, 2)
        if words and words[0] == "primes":
            if len(words) != 3 or len(words[2].split()) != 1:
                raise InvalidPayload("usage: primes LO HI")
            op, args = "primes", {"lo": words[1], "hi": words[2]}
        elif words and words[0] == "sha256" and len(words) >= 2 and words[1].isdigit():
            op, args = "sha256", {"rounds": words[1], "data": words[2] if len(words) > 2 else ""}
    return op, args


def compute(payload: bytes) -> str:
    """CPU work defined by the payload, with a deterministic result anybody can recompute.

    * ``{"op": "sha256", "data": "...", "rounds": N}`` or ``sha256 N text``: N-fold iterated sha256 of the text.
    * ``{"op": "primes", "lo": A, "hi": B}`` or ``primes A B``: how many primes lie in [A, B).
    * any other text (``test_payload``): 100 000-fold iterated sha256 of the text.
    """
    op, args = _parse_compute(payload)
    if op == "primes":
        lo, hi = _int(args.get("lo"), "lo"), _int(args.get("hi"), "hi")
        if hi - lo > MAX_PRIME_RANGE:
            raise InvalidPayload(f"prime range wider than {MAX_PRIME_RANGE}")
        return f"primes[{lo},{hi})={count_primes(lo, hi)}"
    if op == "sha256":
        rounds = _int(args.get("rounds", DEFAULT_SHA256_ROUNDS), "rounds")
        if not 0 <= rounds <= MAX_SHA256_ROUNDS:
            raise InvalidPayload(f"rounds must be within 0..{MAX_SHA256_ROUNDS}")
        data = args.get("data", "")
        if not isinstance(data, str):
            raise InvalidPayload("data must be a string")
        return f"sha256^{rounds}={sha256_rounds(data.encode(), rounds)}"
    return f"sha256^{DEFAULT_SHA256_ROUNDS}={sha256_rounds(payload, DEFAULT_SHA256_ROUNDS)}"


def sleep(payload: bytes) -> str:
    """Sleep for the number of seconds in the payload (for tests of timeouts, retries and cancellation)."""
    try:
        seconds = float(payload.decode().strip() or "0")
    except (UnicodeDecodeError, ValueError):
        raise InvalidPayload(f"sleep needs a number of seconds, got {payload[:40]!r}") from None
    if not 0 <= seconds <= 86400:
        raise InvalidPayload("sleep seconds must be within 0..86400")
    time.sleep(seconds)
    return f"slept {seconds:g} s"


# What the submitter recomputes to check a ``compute`` result: small enough to cost well under a millisecond or two
# on its event loop. Larger tasks get only the checks that cost nothing (shape, bounds), and redundancy for the rest.
VERIFY_MAX_PRIME_RANGE = 100_000
VERIFY_MAX_ROUNDS = 2_000


def verify_compute(payload: bytes, result: bytes) -> bool | None:
    """Check a ``compute`` result: False when it is wrong, True when recomputed and right, None when only its shape
    could be checked (the range or the rounds are too large to recompute cheaply)."""
    try:
        text = result.decode("ascii")
        op, args = _parse_compute(payload)
        if op == "primes":
            lo, hi = _int(args.get("lo"), "lo"), _int(args.get("hi"), "hi")
            prefix = f"primes[{lo},{hi})="
            if not text.startswith(prefix) or not text[len(prefix):].isdigit():
                return False
            count = int(text[len(prefix):])
            if count > max(0, hi - max(lo, 2)):
                return False
            return count == count_primes(lo, hi) if hi - lo <= VERIFY_MAX_PRIME_RANGE else None
        if op == "sha256":
            rounds = _int(args.get("rounds", DEFAULT_SHA256_ROUNDS), "rounds")
            data = str(args.get("data", "")).encode()
        else:
            rounds, data = DEFAULT_SHA256_ROUNDS, payload
        prefix = f"sha256^{rounds}="
        digest = text[len(prefix):]
        if not text.startswith(prefix) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return False
        return digest == sha256_rounds(data, rounds) if rounds <= VERIFY_MAX_ROUNDS else None
    except (UnicodeDecodeError, InvalidPayload, ValueError):
        return False
