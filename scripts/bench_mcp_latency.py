#!/usr/bin/env python3
"""One MCP tool call against one REST call, on an empty installation: what the control
plane adds to a call before any work (a streamed MCP answer against a plain JSON one).

Starts `berth serve` (the binary given, debug or release) on port 0 in a temp data dir
(loopback only), opens one MCP session over streamable HTTP and times `--calls`
`HOSTING_LIST_SITES` calls on one keep-alive connection, then as many `GET /api/sites`.
Prints p50 and p99 of each.
Usage: scripts/bench_mcp_latency.py BINARY [--calls 30]
"""
import argparse, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Berth  # noqa: E402
from bench_scale import Conn, Mcp, pct  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    berth = Berth(args.binary)
    try:
        mcp = Mcp(berth.api)
        calls = []
        for _ in range(args.calls):
            _, _, secs = mcp.rpc("tools/call", {"name": "HOSTING_LIST_SITES", "arguments": {}})
            calls.append(secs * 1000)
        rest, conn = [], Conn(berth.api)
        for _ in range(args.calls):
            status, _, secs, _ = conn.request("GET", "/api/sites")
            if status != 200:
                sys.exit(f"GET /api/sites: {status}")
            rest.append(secs * 1000)
        print(f"MCP HOSTING_LIST_SITES: p50 {statistics.median(calls):.1f} ms, p99 {pct(calls, 99):.1f} ms")
        print(f"GET /api/sites:         p50 {statistics.median(rest):.1f} ms, p99 {pct(rest, 99):.1f} ms")
    finally:
        berth.proc.kill()


if __name__ == "__main__":
    main()
