"""Runs unmodified ccxt (binanceusdm) against a Binance USD-M base URL.

    python ccxt_calls.py http://127.0.0.1:PORT < calls.json

calls.json is a list of calls, run in order on one exchange object:
    {"call": "load_markets"}
    {"call": "fetch_time"}
    {"call": "fetch_ohlcv", "symbol": "BTC/USDT:USDT", "timeframe": "5m",
     "since": null, "limit": 100}
Prints {"results": [{"ok": ...} | {"error": "..."} per call],
        "requests": [{"method", "url", "status"} per HTTP request]}.
Only the public market-data URLs are pointed at the base; the private ones stay
Binance's, as a user's bot would have them (no keys are given, so none is called).
"""

import json
import sys

import ccxt


def main():
    base = sys.argv[1].rstrip("/")
    calls = json.load(sys.stdin)
    exchange = ccxt.binanceusdm({
        "urls": {
            "api": {
                "fapiPublic": base + "/fapi/v1",
                "fapiPublicV2": base + "/fapi/v2",
                "fapiPublicV3": base + "/fapi/v3",
                "fapiData": base + "/futures/data",
            }
        },
        "timeout": 60000,
    })
    requests = []

    def record(response, *args, **kwargs):
        requests.append({
            "method": response.request.method,
            "url": response.request.url,
            "status": response.status_code,
        })

    exchange.session.hooks["response"].append(record)
    results = []
    for call in calls:
        try:
            results.append({"ok": run(exchange, call)})
        except Exception as error:  # the test reports whatever the client raised
            results.append({"error": f"{type(error).__name__}: {error}"})
    json.dump({"results": results, "requests": requests}, sys.stdout)


def run(exchange, call):
    name = call["call"]
    if name == "load_markets":
        markets = exchange.load_markets(reload=True)
        return {symbol: market for symbol, market in sorted(markets.items())}
    if name == "fetch_time":
        return exchange.fetch_time()
    if name == "fetch_ohlcv":
        return exchange.fetch_ohlcv(
            call["symbol"], call["timeframe"], call.get("since"), call.get("limit")
        )
    raise ValueError(f"unknown call {name}")


if __name__ == "__main__":
    main()
