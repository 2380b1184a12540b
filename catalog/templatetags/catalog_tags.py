"""Template filters for catalog pages: ``{% load catalog_tags %}{{ product.price|money }}``."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template
from django.conf import settings

register = template.Library()

# Symbols written before the amount; every other currency is written as "12.50 CHF".
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "INR": "₹", "JPY": "¥", "CNY": "¥", "KRW": "₩"}
# ISO 4217 currencies without minor units.
ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "PYG", "XAF", "XOF"}


def format_money(value, currency: str) -> str:
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    places = 0 if currency in ZERO_DECIMAL else 2
    number = f"{amount:,.{places}f}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{number} {currency}"


@register.filter
def money(value) -> str:
    """A price in the shop's currency (settings.SHOP_CURRENCY): "$1,299.00", "12.50 CHF"."""
    return format_money(value, settings.SHOP_CURRENCY)
