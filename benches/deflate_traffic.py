"""Echo traffic for benches/deflate_callgrind.sh: CONNS python-websockets connections each
send COUNT JSON-like text messages of about SIZE bytes, one at a time, and await each echo
(checked). COMPRESS=1 offers permessage-deflate (the library's default offer: context
takeover both ways, client_max_window_bits); 0 offers nothing. Loopback only; ends by itself.

    python3 benches/deflate_traffic.py ws://127.0.0.1:PORT/ CONNS COUNT SIZE COMPRESS
"""
import asyncio
import sys

import websockets


def message(seq, size):
    parts = ['{"type":"update","seq":%d,"rows":[' % seq]
    k = seq
    while sum(map(len, parts)) < size:
        parts.append('{"id":%d,"user":"user%d","price":%d.%02d,"side":"%s"},'
                     % (k * 7919 % 100003, k % 211, k * 31 % 1000, k % 100, "buy" if k % 3 else "sell"))
        k = (k * 1103515245 + 12345) % (1 << 31) >> 8
    parts.append("]}")
    return "".join(parts)


async def one(url, count, size, compress):
    async with websockets.connect(url, compression="deflate" if compress else None,
                                  max_size=1 << 24) as ws:
        for i in range(count):
            m = message(i, size)
            await ws.send(m)
            if await ws.recv() != m:
                raise SystemExit("echo differs")


async def main(url, conns, count, size, compress):
    await asyncio.gather(*(one(url, count, size, compress) for _ in range(conns)))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"))
