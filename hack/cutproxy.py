#!/usr/bin/env python3
"""A TCP proxy that cuts every connection through it every PERIOD seconds.

Why: hack/soak.sh puts it between the daemon and kube-apiserver so that the
daemon's watches (and any request in flight) are cut and resumed many times in a
soak, without restarting the shared API server. Loopback only.

    cutproxy.py LISTEN_PORT UPSTREAM_PORT PERIOD_SECONDS
"""
import asyncio
import sys

HOST = "127.0.0.1"


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(listen, upstream, period):
    live = set()

    async def serve(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(HOST, upstream)
        except OSError:
            client_w.close()
            return
        tasks = (
            asyncio.create_task(pipe(client_r, server_w)),
            asyncio.create_task(pipe(server_r, client_w)),
        )
        conn = (tasks, client_w, server_w)
        live.add(conn)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            client_w.close()
            server_w.close()
            live.discard(conn)

    server = await asyncio.start_server(serve, HOST, listen)
    cuts = 0
    async with server:
        while True:
            await asyncio.sleep(period)
            cuts += 1
            n = len(live)
            for tasks, client_w, server_w in list(live):
                for t in tasks:
                    t.cancel()
                for w in (client_w, server_w):
                    w.transport.abort()
            print(f"cutproxy: cut {cuts}: {n} connections", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
