"""An open62541 (o6) OPC UA server for the interop test, run as a subprocess.

Protocol on stdin/stdout: prints ``ready`` once listening; reads lines
``set NAME VALUE ISO-TIMESTAMP`` (answers ``ok``) and ``get NAME`` (answers the value);
exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys


async def main(port: int) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # o6 prints a banner on import
        import o6
    server = o6.Server(port=port)
    with server:
        nodes = {
            "temperature": await server.addVariable(
                "temperature", server.objectsNode, 20.0, nodeId="ns=1;s=line-1/temperature"
            ),
            "count": await server.addVariable(
                "count", server.objectsNode, o6.Int32(0), nodeId="ns=1;s=line-1/count"
            ),
            "setpoint": await server.addVariable(
                "setpoint", server.objectsNode, o6.Int32(100), nodeId="ns=1;s=line-1/setpoint"
            ),
        }
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            parts = line.split()
            if parts[0] == "set":
                name, raw, ts = parts[1], parts[2], parts[3]
                value = o6.Int32(int(raw)) if name != "temperature" else float(raw)
                dv = o6.DataValue(value=value, sourceTimestamp=o6.DateTime(ts))
                await server.write(nodes[name], dv)
                print("ok", flush=True)
            elif parts[0] == "get":
                print(await server.read(nodes[parts[1]]), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
