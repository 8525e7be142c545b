"""Runs unmodified python-binance (Client, USD-M futures) against a base URL.

    python binance_calls.py http://127.0.0.1:PORT < calls.json

calls.json is a list of calls, run in order on one Client:
    {"call": "futures_ping"}
    {"call": "futures_time"}
    {"call": "futures_klines", "symbol": "BTCUSDT", "interval": "1m", "limit": 100}
    {"call": "futures_historical_klines", "symbol": "BTCUSDT", "interval": "1m",
     "start_str": 1700000000000, "end_str": 1700000600000}
Prints {"results": [{"ok": ...} | {"error": "..."} per call],
        "requests": [{"method", "url", "status"} per HTTP request]}.
The Client is built as a user points it at a mirror: no keys, no ping at
construction, FUTURES_URL set to the base's /fapi.
"""

import json
import sys

from binance.client import Client


def main():
    base = sys.argv[1].rstrip("/")
    calls = json.load(sys.stdin)
    client = Client(api_key=None, api_secret=None, ping=False)
    client.FUTURES_URL = base + "/fapi"
    requests = []

    def record(response, *args, **kwargs):
        requests.append({
            "method": response.request.method,
            "url": response.request.url,
            "status": response.status_code,
        })

    client.session.hooks["response"].append(record)
    results = []
    for call in calls:
        try:
            results.append({"ok": run(client, call)})
        except Exception as error:  # the test reports whatever the client raised
            results.append({"error": f"{type(error).__name__}: {error}"})
    json.dump({"results": results, "requests": requests}, sys.stdout)


def run(client, call):
    name = call["call"]
    if name == "futures_ping":
        return client.futures_ping()
    if name == "futures_time":
        return client.futures_time()
    if name == "futures_klines":
        params = {k: call[k] for k in ("symbol", "interval", "limit", "startTime", "endTime") if k in call}
        return client.futures_klines(**params)
    if name == "futures_historical_klines":
        return client.futures_historical_klines(
            call["symbol"], call["interval"], call["start_str"], call.get("end_str")
        )
    raise ValueError(f"unknown call {name}")


if __name__ == "__main__":
    main()
