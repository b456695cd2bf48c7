#!/usr/bin/env python3
"""Resident memory of a running gateway holding connections that never send a byte.

    silent_connections.py PID HOST:PORT [COUNT (9000)] [ROUNDS (4)]

Opens COUNT TCP connections to HOST:PORT (a hostgate listener, or any other proxy), sends
nothing, waits 2 s and prints the process's VmRSS; closes them, waits 10 s and prints it again;
ROUNDS times. The listener's sniff (or header) timeout must be longer than it takes to open
them all (a few seconds). Needs a descriptor limit above COUNT (it raises its own soft limit to
the hard one). BENCHMARKS.md, "Silent connections", has the figures.
"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for {pid}")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    pid, (host, port) = sys.argv[1], sys.argv[2].rsplit(":", 1)
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 9000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = rss_kib(pid)
    print(f"before: {base} KiB")
    for r in range(rounds):
        socks = [socket.create_connection((host, int(port))) for _ in range(count)]
        time.sleep(2)
        held = rss_kib(pid)
        print(f"round {r}: {count} held: {held} KiB ({(held - base) * 1024 / count:.0f} bytes each over the start)", flush=True)
        for s in socks:
            s.close()
        time.sleep(10)
        print(f"round {r}: closed: {rss_kib(pid)} KiB", flush=True)


if __name__ == "__main__":
    main()
