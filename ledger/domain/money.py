"""Money: integer minor units and ISO 4217 currency codes. Never floats.

Every amount the ledger accepts is at most MAX_AMOUNT, and every sum it keeps is checked
against it, so nothing can approach the int64 range of the wire format.
"""

from __future__ import annotations

# Active ISO 4217 codes and their number of minor-unit digits (exponent).
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP "
        "BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL "
        "GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP "
        "LKR LRD LSL MAD MDL MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD "
        "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
        "SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW "
        "ZWG".split(),
        2,
    ),
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    "CLF": 4,
    "UYW": 4,
}

# 10^15 minor units: ten trillion dollars. Sums of a few thousand such amounts stay far
# below 2^63, and the ledger refuses any single amount or total above it.
MAX_AMOUNT = 10**15

PPM = 1_000_000  # tax rates are given in parts per million


def is_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def line_tax(net_amount: int, tax_rate_ppm: int) -> int:
    """Tax on a line's discounted amount, rounded half up to the minor unit.

    This is the ledger's one rounding rule: tax is computed per line on
    (quantity x unit_price - discount) and rounded half up; totals are plain sums.
    """
    assert net_amount >= 0
    assert tax_rate_ppm >= 0
    return (net_amount * tax_rate_ppm + PPM // 2) // PPM
