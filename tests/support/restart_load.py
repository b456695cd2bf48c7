#!/usr/bin/env python3
"""Helpers of tests/restart.rs (run inside the test's network namespace).

  restart_load.py echo
      A TCP echo server on 127.0.0.1:0; prints its port, serves until killed.

  restart_load.py supervise PORT -- COMMAND...
      What systemd does for a socket-activated service: binds 127.0.0.1:PORT (backlog 1024) and
      runs COMMAND with the socket as fd 3 (LISTEN_FDS=1, LISTEN_PID = the command's pid). A
      line `restart` on standard input stops the command the way `systemctl restart` does
      (SIGTERM, then wait for it to exit) and starts it again on the same socket, which stays
      open throughout. Prints `started PID` for each start and `exited PID STATUS`.

  restart_load.py load PORT RATE SECONDS TUNNELS TUNNEL_SECONDS
      New connections to the explicit proxy at 127.0.0.1:PORT, RATE a second for SECONDS, each
      `CONNECT denied.test:443` that must be answered `403` (counted ok) — anything else (a
      refused or reset connection, no answer within 10 s, another status) counts failed. Also
      TUNNELS tunnels opened at the start (`CONNECT echo.test:7`, `200`), each echoing a line
      every 100 ms for TUNNEL_SECONDS and then closed; a lost or wrong echo fails the tunnel.
      Prints one JSON object: {"ok", "failed", "errors", "tunnels_ok", "tunnels_failed",
      "echoes", "achieved_rate"}.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time


async def echo_server():
    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def supervise(port, command):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    if sock.fileno() != 3:
        os.dup2(sock.fileno(), 3)
    os.set_inheritable(3, True)

    def start():
        # LISTEN_PID must be the service's own pid: set it in the shell that execs it.
        argv = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh"] + command
        child = subprocess.Popen(argv, pass_fds=(3,))
        print(f"started {child.pid}", flush=True)
        return child

    child = start()
    for line in sys.stdin:
        if line.strip() == "restart":
            child.send_signal(signal.SIGTERM)
            status = child.wait()
            print(f"exited {child.pid} {status}", flush=True)
            child = start()
        elif line.strip() == "stop":
            break
    child.send_signal(signal.SIGTERM)
    status = child.wait()
    print(f"exited {child.pid} {status}", flush=True)


async def read_head(reader):
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


async def one(port, results):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except Exception as e:  # refused, timed out
        results["failed"] += 1
        results["errors"].append(f"connect: {e!r}")
        return
    try:
        writer.write(b"CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\n\r\n")
        await writer.drain()
        head = await read_head(reader)
        if head.startswith(b"HTTP/1.1 403"):
            results["ok"] += 1
        else:
            results["failed"] += 1
            results["errors"].append(f"answer: {head[:40]!r}")
    except Exception as e:
        results["failed"] += 1
        results["errors"].append(f"exchange: {e!r}")
    finally:
        writer.close()


async def tunnel(port, seconds, results, n):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(b"CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\n")
        await writer.drain()
        head = await read_head(reader)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"tunnel {n}: {head[:40]!r}")
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            # Not HTTP, not TLS: an opaque stream, relayed as it is.
            line = b"\x00" + f"tunnel {n} line {i}\n".encode()
            writer.write(line)
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(len(line)), 5)
            if got != line:
                raise RuntimeError(f"tunnel {n}: echoed {got!r}")
            results["echoes"] += 1
            i += 1
            await asyncio.sleep(0.1)
        writer.close()
        results["tunnels_ok"] += 1
    except Exception as e:
        results["tunnels_failed"] += 1
        results["errors"].append(f"tunnel {n}: {e!r}")


async def load(port, rate, seconds, tunnels, tunnel_seconds):
    results = {"ok": 0, "failed": 0, "errors": [], "tunnels_ok": 0, "tunnels_failed": 0, "echoes": 0}
    tasks = [asyncio.create_task(tunnel(port, tunnel_seconds, results, n)) for n in range(tunnels)]
    start = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic() - start
        if now >= seconds:
            break
        due = int(now * rate) + 1
        while sent < due:
            tasks.append(asyncio.create_task(one(port, results)))
            sent += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    results["achieved_rate"] = sent / seconds
    results["errors"] = results["errors"][:20]
    print(json.dumps(results), flush=True)


def main():
    mode = sys.argv[1]
    if mode == "echo":
        asyncio.run(echo_server())
    elif mode == "supervise":
        sep = sys.argv.index("--")
        supervise(int(sys.argv[2]), sys.argv[sep + 1:])
    elif mode == "load":
        port, rate, seconds, tunnels, tunnel_seconds = sys.argv[2:7]
        asyncio.run(load(int(port), float(rate), float(seconds), int(tunnels), float(tunnel_seconds)))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
