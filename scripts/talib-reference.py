#!/usr/bin/env python3
"""TA-Lib's own values for the indicators of src/candle/indicators, the reference its unit tests
compare against (they read the JSON this writes; they need neither Python nor TA-Lib).

Rerun from the repository root after changing the series or the list below:

    python3 -m venv /tmp/talib-venv && /tmp/talib-venv/bin/pip install TA-Lib numpy
    /tmp/talib-venv/bin/python scripts/talib-reference.py

It writes src/candle/testdata/talib_reference.json. The series are seeded, so a rerun with the
same numpy gives the same closes; the file records the TA-Lib version whose values it holds.
Recent TA-Lib wheels bundle the C library, so no system package is needed.

TA-Lib runs with its defaults, set explicitly here: compatibility TA_COMPATIBILITY_DEFAULT and
no unstable period. NaN (TA-Lib's lookback) is written as null.
"""

import json
import pathlib
import re

import numpy as np
import talib

OUT = pathlib.Path(__file__).resolve().parent.parent / "src/candle/testdata/talib_reference.json"

# The indicators every series is checked with, by the names the API takes.
COMMON = ["sma20", "ema20", "ema200", "rsi14", "rsi2", "bb20", "sma500", "macd"]
# The period edges (2 and 500) too, on the shorter series, to keep the file small.
EDGES = ["sma2", "ema2", "bb2", "ema500", "rsi500", "bb500"]


def walk(rng, start, sigma, count, decimals):
    """A geometric random walk rounded to the instrument's tick, as exchange closes are."""
    steps = rng.normal(0.0, sigma, count - 1)
    prices = start * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))
    return [round(float(p), decimals) for p in prices]


def btc(rng):
    """BTC-like: ~97,000, tick 0.1, 1-minute-like volatility; 2,000 closes."""
    return walk(rng, 97_000.0, 0.0008, 2_000, 1)


def flat(rng):
    """BTC-level closes with flat stretches: it opens flat (RSI's gains and losses both exactly 0,
    a zero-width band), then walks with runs of identical closes up to 150 long, long enough for
    rsi2's averages to decay far below any fixed epsilon and for bb20 and bb500 windows to be flat
    at a 64,000 level."""
    closes = [64_000.0] * 40
    for run in [3, 10, 25, 60, 150, 5, 90, 20]:
        closes += walk(rng, closes[-1], 0.001, 30, 1)[1:]
        closes += [closes[-1]] * run
    return closes


def xrp(rng):
    """XRP-like: ~2.3, tick 0.0001, small moves so many closes repeat (zero changes); 900 closes."""
    closes = walk(rng, 2.3, 0.0002, 600, 4)
    closes += [closes[-1]] * 40
    closes += walk(rng, closes[-1], 0.0004, 261, 4)[1:]
    return closes


def nan_to_none(values):
    return [None if np.isnan(v) else float(v) for v in values]


def compute(name, closes):
    """TA-Lib's output for one indicator name: a number, a band triple or a MACD triple per close."""
    x = np.array(closes, dtype=np.float64)
    if name == "macd":
        line, signal, hist = talib.MACD(x, fastperiod=12, slowperiod=26, signalperiod=9)
        return [
            None if np.isnan(m) else {"macd": float(m), "signal": float(s), "histogram": float(h)}
            for m, s, h in zip(line, signal, hist)
        ]
    kind, period = re.fullmatch(r"(sma|ema|rsi|bb)([1-9][0-9]*)", name).groups()
    period = int(period)
    if kind == "bb":
        upper, middle, lower = talib.BBANDS(
            x, timeperiod=period, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA
        )
        return [
            None if np.isnan(m) else {"upper": float(u), "middle": float(m), "lower": float(l)}
            for u, m, l in zip(upper, middle, lower)
        ]
    function = {"sma": talib.SMA, "ema": talib.EMA, "rsi": talib.RSI}[kind]
    return nan_to_none(function(x, timeperiod=period))


def main():
    talib.set_compatibility(0)  # TA_COMPATIBILITY_DEFAULT
    talib.set_unstable_period("ALL", 0)
    rng = np.random.default_rng(20_251_130)
    series = [
        ("btc", btc(rng), COMMON),
        ("flat", flat(rng), COMMON + EDGES),
        ("xrp", xrp(rng), COMMON + EDGES),
    ]
    # One line per series' closes and per indicator, so a regenerated file diffs readably.
    dump = lambda value: json.dumps(value, separators=(",", ":"), allow_nan=False)
    lines = [
        "{",
        f'"generator":{dump("scripts/talib-reference.py")},',
        f'"talib":{dump(talib.__ta_version__.decode())},',
        f'"ta_lib_python":{dump(talib.__version__)},',
        '"series":[',
    ]
    for index, (name, closes, indicators) in enumerate(series):
        lines.append(f'{{"name":{dump(name)},')
        lines.append(f'"closes":{dump(closes)},')
        lines.append('"indicators":{')
        for position, indicator in enumerate(indicators):
            comma = "," if position + 1 < len(indicators) else ""
            lines.append(f"{dump(indicator)}:{dump(compute(indicator, closes))}{comma}")
        lines.append("}}" + ("," if index + 1 < len(series) else ""))
    lines += ["]", "}"]
    OUT.write_text("\n".join(lines) + "\n")
    json.loads(OUT.read_text())  # fail here, not in the Rust tests, if the file is malformed
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
