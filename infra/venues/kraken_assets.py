"""Kraken asset ids → the codes people use, through an explicit table (DESIGN §3).

Kraken's balance keys are its internal asset ids. The legacy ones carry an ``X`` (crypto) or
``Z`` (fiat) prefix (``XXBT``, ``ZUSD``), and Bitcoin and Dogecoin go by ``XBT``/``XDG``. The
prefix is **not a rule**: ``XTZ``, ``ZRX`` and ``XAUT`` begin with X or Z by name. So codes are
mapped only through :data:`LEGACY_CODES`, never by stripping letters; a code that is not in the
table is returned unchanged.

Suffixed codes (``ETH.F`` auto-earn, ``DOT.S`` staked, ``USD.M`` opt-in rewards, ``USD.HOLD``
fiat hold, ``.B``, ``.T``) are read-only views of a base asset held in a different state. They
stay **separate assets**: only the part before the first ``.`` goes through the table, so
``XBT.M`` becomes ``BTC.M`` (canonical, still separate) and ``ETH.F`` stays ``ETH.F``. Folding
them into the base asset is the account's ``asset_map``'s job, applied to the client's output.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: Kraken's internal id of each legacy asset → (its Kraken altname, the canonical code).
#: The altname is what ``GET /0/public/Assets`` reports (``XXBT`` → ``XBT``); the canonical
#: code is what desks and books use (``BTC``).
LEGACY_ASSETS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "XXBT": ("XBT", "BTC"),
        "XETH": ("ETH", "ETH"),
        "XLTC": ("LTC", "LTC"),
        "XXRP": ("XRP", "XRP"),
        "XXLM": ("XLM", "XLM"),
        "XXMR": ("XMR", "XMR"),
        "XZEC": ("ZEC", "ZEC"),
        "XETC": ("ETC", "ETC"),
        "XMLN": ("MLN", "MLN"),
        "XREP": ("REP", "REP"),
        "XXDG": ("XDG", "DOGE"),
        "ZUSD": ("USD", "USD"),
        "ZEUR": ("EUR", "EUR"),
        "ZGBP": ("GBP", "GBP"),
        "ZCAD": ("CAD", "CAD"),
        "ZJPY": ("JPY", "JPY"),
        "ZAUD": ("AUD", "AUD"),
    }
)

#: Every Kraken code that is not already the canonical one → the canonical code.
LEGACY_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        **{venue_id: canonical for venue_id, (_alt, canonical) in LEGACY_ASSETS.items()},
        # Kraken's own names for Bitcoin and Dogecoin, seen as altnames and in suffixed codes.
        "XBT": "BTC",
        "XDG": "DOGE",
        # Terra after its 2022 relaunch: Kraken kept the old ids for the old chain. ccxt maps
        # them the same way, so a native and a ccxt:kraken account report the same codes.
        "LUNA": "LUNC",
        "LUNA2": "LUNA",
        "UST": "USTC",
    }
)

#: Canonical code → the Kraken internal id that holds it (``BTC`` → ``XXBT``).
KRAKEN_IDS: Final[Mapping[str, str]] = MappingProxyType(
    {canonical: venue_id for venue_id, (_alt, canonical) in LEGACY_ASSETS.items()}
)


def canonical_asset(code: str) -> str:
    """The canonical code of Kraken asset ``code``; the suffix of a suffixed code is kept.

    ``XXBT`` → ``BTC``, ``XBT.M`` → ``BTC.M``, ``ETH.F`` → ``ETH.F``, ``XTZ`` → ``XTZ``.
    """
    base, dot, suffix = code.partition(".")
    mapped = LEGACY_CODES.get(base, base)
    return f"{mapped}{dot}{suffix}"


def altname(venue_id: str) -> str:
    """Kraken's altname of an asset id (``XXBT`` → ``XBT``); other ids are their own altname."""
    legacy = LEGACY_ASSETS.get(venue_id)
    return venue_id if legacy is None else legacy[0]
