"""python-websockets (Debian's python3-websockets) against the shipped binary, compressed.

Opens CONNS connections at once with the library's default permessage-deflate offer (context
takeover both ways, client_max_window_bits), sends COUNT JSON-like messages on each in turn,
interleaved across connections, sizes from a few hundred bytes to past the 32 KiB window,
and checks every echo byte for byte. Prints the Sec-WebSocket-Extensions answer of each
connection and "ok COUNT" at the end; any mismatch or close raises (exit status 1).

    python3 deflate_client.py ws://127.0.0.1:PORT/ CONNS COUNT
"""
import asyncio
import random
import sys

import websockets


def message(rng, conn, i):
    # Repetitive across messages (so the kept window matters) with some noise.
    parts = ['{"conn":%d,"seq":%d,"items":[' % (conn, i)]
    size = rng.choice([40, 300, 1500, 9000, 50000])
    while sum(map(len, parts)) < size:
        parts.append('{"id":%d,"name":"item-%d","price":%d.%02d,"tags":["a","b"]},'
                     % (rng.randrange(1000), rng.randrange(50), rng.randrange(100), rng.randrange(100)))
    parts.append("]}")
    return "".join(parts)


async def main(url, conns, count):
    rng = random.Random(7)
    sockets = [await websockets.connect(url, max_size=1 << 22, compression="deflate")
               for _ in range(conns)]
    for ws in sockets:
        print("extensions:", ws.response_headers.get("Sec-WebSocket-Extensions"))
    for i in range(count):
        for c, ws in enumerate(sockets):
            if i % 7 == 3:
                data = bytes(rng.randrange(4) for _ in range(rng.choice([100, 5000])))
            else:
                data = message(rng, c, i)
            await ws.send(data)
            echo = await ws.recv()
            if echo != data:
                raise SystemExit("connection %d message %d: echo differs" % (c, i))
    for ws in sockets:
        await ws.close()
    print("ok", count)


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
