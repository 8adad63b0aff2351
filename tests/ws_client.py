"""permessage-deflate against a mist WebSocket echo endpoint, one case per
negotiation parameter. Prints `ok CASE` per passing case; exits 1 on the
first failure. Used by tests/ws.rs; needs `pip install websockets`."""
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

URL = sys.argv[1]

CASES = {
    "default": {},
    "server_no_context_takeover": {"server_no_context_takeover": True},
    "client_no_context_takeover": {"client_no_context_takeover": True},
    "server_max_window_bits=10": {"server_max_window_bits": 10},
    "client_max_window_bits=9": {"client_max_window_bits": 9},
}


async def case(name, params):
    factory = ClientPerMessageDeflateFactory(**params)
    async with connect(URL, extensions=[factory], compression=None, max_size=None) as ws:
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert agreed.startswith("permessage-deflate"), f"not negotiated: {agreed!r}"
        for key in params:
            assert key in agreed, f"{key} not in {agreed!r}"
        for text in ["hello " * 200, "hello " * 200, "é" * 5000, "x"]:
            await ws.send(text)
            assert await ws.recv() == text
        blob = bytes(range(256)) * 400
        await ws.send(blob)
        assert await ws.recv() == blob
    print(f"ok {name}", flush=True)


async def main():
    for name, params in CASES.items():
        await case(name, params)


asyncio.run(main())
