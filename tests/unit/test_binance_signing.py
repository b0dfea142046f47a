"""Binance HMAC-SHA256 request signing, against the published test vector."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from infra.sandbox import binance as sandbox_binance
from infra.venues.binance import sign

#: Binance's published example (rest-api.md, "SIGNED endpoint examples"), reproduced in
#: shared/reference/exchange-apis.md §4.
VECTOR_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
VECTOR_PAYLOAD = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
VECTOR_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_published_test_vector() -> None:
    """sign() reproduces the signature Binance publishes for its example order."""
    assert sign(VECTOR_PAYLOAD, VECTOR_SECRET) == VECTOR_SIGNATURE


def test_signature_is_lower_case_hex_of_64_digits() -> None:
    """The signature is the HMAC-SHA256 digest as 64 lower-case hex digits."""
    signature = sign("omitZeroBalances=true&recvWindow=5000&timestamp=1", "s3cret")
    assert len(signature) == 64
    assert signature == signature.lower()
    int(signature, 16)


def test_any_change_to_the_payload_changes_the_signature() -> None:
    """The signature covers every byte of the query (a different timestamp signs differently)."""
    changed = VECTOR_PAYLOAD.replace("1499827319559", "1499827319560")
    assert sign(changed, VECTOR_SECRET) != VECTOR_SIGNATURE
    assert sign(VECTOR_PAYLOAD, VECTOR_SECRET + "x") != VECTOR_SIGNATURE


@given(st.text(max_size=200), st.text(alphabet="abcdefXYZ0123456789", min_size=1, max_size=64))
def test_client_and_sandbox_signers_agree_with_hmac(payload: str, secret: str) -> None:
    """The client's signer and the sandbox's verifier compute the same HMAC-SHA256 hex."""
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    assert sign(payload, secret) == expected
    assert sandbox_binance.sign(payload, secret) == expected


def test_sandbox_strips_only_the_signature_parameter() -> None:
    """The sandbox verifies the exact received query minus ``signature``, wherever it sits."""
    query = f"{VECTOR_PAYLOAD}&signature={VECTOR_SIGNATURE}"
    assert sandbox_binance.split_signature(query) == (VECTOR_PAYLOAD, [VECTOR_SIGNATURE])
    first = f"signature=abc&{VECTOR_PAYLOAD}"
    assert sandbox_binance.split_signature(first) == (VECTOR_PAYLOAD, ["abc"])
