"""The fake's classifications endpoint: deterministic objects per identifier, Laravel's 422s.

`GET /api/classifications?identifiers[]=ID&identifiers[]=ID...` (alias
`/api/classifications_image`) answers a JSON array with one object per known identifier.
`has_heatmap` agrees with the heatmap endpoint: it is false exactly for the identifiers that
answer 204 there, unless the classification is still running (`status` "new").
"""

from __future__ import annotations

import functools
import hashlib
import json
from urllib.parse import parse_qsl

from batchmap.fakeserver.heatmaps import expected_status

CLASSIFICATIONS_PATHS = ("/api/classifications", "/api/classifications_image")
MAX_IDENTIFIERS = 100
API_VERSION = "2.1"
MODEL = "identifai-v3"


class ValidationFailed(Exception):
    """A request Laravel's validator would refuse; the message is Laravel's wording."""


def parse_identifiers(query: str) -> list[str]:
    """The distinct identifiers of a query string, in order; raises ValidationFailed like Laravel.

    PHP reads `identifiers[]=a&identifiers[1]=b` as an array and a bare `identifiers=a` as a
    string, which the `required|array|max:100` rule then refuses.
    """
    found: list[str] = []
    bare = False
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "identifiers[]" or (
            name.startswith("identifiers[") and name.endswith("]") and name[12:-1].isdigit()
        ):
            found.append(value)
        elif name == "identifiers":
            bare = True
    if not found:
        if bare:
            raise ValidationFailed("The identifiers field must be an array.")
        raise ValidationFailed("The identifiers field is required.")
    if len(found) > MAX_IDENTIFIERS:
        raise ValidationFailed(
            f"The identifiers field must not have more than {MAX_IDENTIFIERS} items."
        )
    return list(dict.fromkeys(found))


def validation_body(message: str) -> dict[str, object]:
    """Laravel's 422 body for one failed rule."""
    return {"message": message, "errors": {"identifiers": [message]}}


def _digest(purpose: str, identifier: str) -> bytes:
    return hashlib.sha256(f"{purpose}\0{identifier}".encode()).digest()


def is_pending(identifier: str, pending_rate: float) -> bool:
    """Whether `identifier`'s classification is still running, a deterministic share of them."""
    if pending_rate <= 0:
        return False
    draw = int.from_bytes(_digest("pending", identifier)[:8], "big") / 2**64
    return draw < pending_rate


def is_known(identifier: str) -> bool:
    """Unknown identifiers are the ones the heatmap endpoint answers 404."""
    return expected_status(identifier) != 404


def _verdict(heuristic: str, classification: str, confidence: float) -> dict[str, object]:
    return {
        "heuristic": heuristic,
        "confidence": confidence,
        "classification": classification,
        "models": [],
    }


def classification_of(identifier: str, *, pending: bool = False) -> dict[str, object]:
    """The classification object the fake answers for a known `identifier` (a fresh dict)."""
    d = _digest("classification", identifier)
    done = not pending
    has_heatmap = done and expected_status(identifier) != 204
    label = "artificial" if has_heatmap else "human"
    confidence = round(0.5 + 0.5 * int.from_bytes(d[8:10], "big") / 65535, 4)
    results: list[object] = []
    verdicts: list[object] = []
    if done:
        other = "human" if label == "artificial" else "artificial"
        scores = [{"label": label, "score": confidence}]
        scores.append({"label": other, "score": round(1 - confidence, 4)})
        results.append(
            {
                "model": MODEL,
                "unknown": False,
                "elapsed_time": round(0.1 + d[10] / 255, 3),
                "classification": scores,
                "classification_details": None,
            }
        )
        verdicts = [
            _verdict("default", label, confidence),
            _verdict("strict", label, round(confidence * 0.9, 4)),
        ]
    return {
        "identifier": identifier,
        "hash": _digest("image", identifier).hex(),
        "name": None if d[0] % 8 == 0 else f"IMG_{int.from_bytes(d[1:3], 'big'):05d}.jpg",
        "ref_id": None if d[3] % 2 else f"ref-{d[4:8].hex()}",
        "c2pa": None,
        "has_heatmap": has_heatmap,
        "verdict": _verdict("default", label, confidence) if done else None,
        "verdicts": verdicts,
        "force_classification": None,
        "results": results,
        "status": "done" if done else "new",
        "errors": [],
        "api_version": API_VERSION,
    }


@functools.lru_cache(maxsize=65536)
def encoded(identifier: str, pending: bool) -> bytes:
    """`classification_of` as JSON, cached: benchmarks ask for the same identifiers often."""
    return json.dumps(classification_of(identifier, pending=pending)).encode()


def answer_body(identifiers: list[str], *, pending_rate: float, odd: bool) -> bytes:
    """The JSON body for known `identifiers`: an array, or `{"data": [...]}` when `odd`."""
    array = b"[" + b",".join(encoded(i, is_pending(i, pending_rate)) for i in identifiers) + b"]"
    return b'{"data":' + array + b"}" if odd else array
