#!/usr/bin/env python3
"""An HTTP/1.1-WebSocket to HTTP/2-WebSocket (RFC 8441) bridge.

    scripts/h2-ws-bridge.py 127.0.0.1:SERVERPORT [--port N]

Listens on 127.0.0.1 (port 0 unless --port) and prints `Bridge on PORT`.
Each TCP connection (an HTTP/1.1 client such as Autobahn's fuzzingclient)
sends its Upgrade request; the bridge opens a new HTTP/2 connection (prior
knowledge, plain TCP) to the server, waits for the server's SETTINGS with
ENABLE_CONNECT_PROTOCOL=1, and sends an extended CONNECT (`:protocol
websocket`). A 200 becomes `101 Switching Protocols` (with the accept key
for the client's key and the extensions/subprotocol the server chose); any
other status is relayed and the connection closed. Then the bytes flow
unchanged both ways: client bytes become DATA on the stream (within the
server's flow-control windows), the server's DATA is written to the client
and acknowledged only once the client socket has taken it (so at most one
receive window, WINDOW bytes, is ever buffered per direction).

Endings: the server's END_STREAM half-closes the client TCP connection
(after flushing); RST_STREAM, GOAWAY or loss of the server connection resets
it (SO_LINGER 0); the client's EOF ends the stream (END_STREAM), a client
reset cancels it (RST_STREAM CANCEL); the h2 connection is closed (GOAWAY)
when the stream is over in both directions.
"""
import argparse, asyncio, base64, hashlib, http, socket, struct, sys

try:
    import h2.config, h2.connection, h2.errors, h2.events, h2.exceptions, h2.settings
except ImportError:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "h2"], check=True)
    import h2.config, h2.connection, h2.errors, h2.events, h2.exceptions, h2.settings

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WINDOW = 1 << 20          # our receive window (stream and connection)
READ = 1 << 16            # largest read from either socket
HANDSHAKE_TIMEOUT = 10.0  # for the server's SETTINGS and response
SETTLE_TIMEOUT = 10.0     # for the server to end its side after ours


def log(*a):
    print("bridge:", *a, file=sys.stderr, flush=True)


def reset_close(writer):
    """Close a TCP connection with a RST (SO_LINGER 0)."""
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


def simple_response(status, reason=None):
    if reason is None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n"
            f"connection: close\r\n\r\n").encode("latin-1")


def parse_request(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"bad request line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return parts[0], parts[1], headers


class Bridge:
    def __init__(self, upstream, a_reader, a_writer):
        self.upstream = upstream
        self.ar, self.aw = a_reader, a_writer
        self.sr = self.sw = None
        self.conn = None
        self.sid = None
        self.settings = asyncio.Event()
        self.response = asyncio.get_running_loop().create_future()
        self.window = asyncio.Event()   # set when the send window may have grown
        self.server_done = asyncio.get_running_loop().create_future()  # "end" / "reset"
        self.pending_ack = 0
        self.early = []                 # server DATA received before the 101 went out
        self.ack_wanted = asyncio.Event()
        self.tasks = []

    # -- h2 plumbing -------------------------------------------------------
    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.sw.is_closing():
            self.sw.write(data)

    def finish_server(self, how):
        if not self.server_done.done():
            self.server_done.set_result(how)
        if not self.response.done():
            self.response.set_result(None)
        self.settings.set()
        self.window.set()

    async def server_pump(self):
        """Reads the server's connection and dispatches its events."""
        try:
            while True:
                data = await self.sr.read(READ)
                if not data:
                    self.finish_server("reset")
                    return
                events = self.conn.receive_data(data)
                for ev in events:
                    self.on_event(ev)
                self.flush()
        except (ConnectionError, OSError, h2.exceptions.ProtocolError) as e:
            log("server connection:", repr(e))
            self.finish_server("reset")
        except asyncio.CancelledError:
            raise

    def on_event(self, ev):
        E = h2.events
        if isinstance(ev, E.RemoteSettingsChanged):
            self.settings.set()
            self.window.set()
        elif isinstance(ev, E.WindowUpdated):
            self.window.set()
        elif isinstance(ev, E.ResponseReceived) and ev.stream_id == self.sid:
            if not self.response.done():
                self.response.set_result(ev.headers)
        elif isinstance(ev, E.DataReceived) and ev.stream_id == self.sid:
            if self.early is not None:  # before the 101 (or a refusal's body)
                self.early.append(ev.data)
            elif ev.data and not self.aw.is_closing():
                self.aw.write(ev.data)
            self.pending_ack += ev.flow_controlled_length
            self.ack_wanted.set()
        elif isinstance(ev, E.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, E.StreamEnded) and ev.stream_id == self.sid:
            self.finish_server("end")
        elif isinstance(ev, E.StreamReset) and ev.stream_id == self.sid:
            if not self.server_done.done():  # (NO_ERROR after END_STREAM is normal)
                log(f"server reset the stream ({ev.error_code!r})")
            self.finish_server("reset")
        elif isinstance(ev, E.ConnectionTerminated):
            if not self.server_done.done():
                log(f"server GOAWAY ({ev.error_code!r}) with the stream open")
            self.finish_server("reset")

    async def ack_pump(self):
        """Acknowledges the server's DATA once the client socket took it."""
        while True:
            await self.ack_wanted.wait()
            self.ack_wanted.clear()
            try:
                await self.aw.drain()
            except (ConnectionError, OSError):
                pass  # client gone: free the window anyway, the data is dropped
            n, self.pending_ack = self.pending_ack, 0
            if n and self.conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
                try:
                    self.conn.acknowledge_received_data(n, self.sid)
                    self.flush()
                except h2.exceptions.ProtocolError:
                    pass

    async def send(self, data):
        """Sends client bytes as DATA within the flow-control windows."""
        view = memoryview(data)
        while view:
            if self.server_done.done() and self.server_done.result() == "reset":
                return False
            try:
                win = self.conn.local_flow_control_window(self.sid)
            except h2.exceptions.StreamClosedError:
                return False
            if win <= 0:
                self.window.clear()
                await self.window.wait()
                continue
            n = min(win, self.conn.max_outbound_frame_size, len(view))
            try:
                self.conn.send_data(self.sid, bytes(view[:n]))
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return False
            view = view[n:]
            self.flush()
        try:
            await self.sw.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def client_pump(self):
        """Client bytes -> DATA; returns "eof", "reset" or "gone" (the stream)."""
        try:
            while True:
                data = await self.ar.read(READ)  # bytes after the head first
                if not data:
                    return "eof"
                if not await self.send(data):
                    return "gone"
        except (ConnectionError, OSError):
            return "reset"

    # -- a connection ------------------------------------------------------
    async def run(self):
        try:
            head = await self.ar.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            self.aw.close()
            return
        try:
            method, path, hdrs = parse_request(head)
            key = hdrs["sec-websocket-key"]
            if method != "GET":
                raise ValueError(f"method {method}")
        except (ValueError, KeyError) as e:
            log("bad upgrade request:", e)
            self.aw.write(simple_response(400))
            await self.close_client()
            return

        host, port = self.upstream
        try:
            self.sr, self.sw = await asyncio.open_connection(host, port)
        except OSError as e:
            log("cannot reach the server:", e)
            self.aw.write(simple_response(502))
            await self.close_client()
            return
        try:
            await self.bridge(path, hdrs, key)
        finally:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if not self.sw.is_closing():
                self.sw.close()
            if not self.aw.is_closing():
                self.aw.close()

    async def close_client(self):
        try:
            await self.aw.drain()
        except (ConnectionError, OSError):
            pass
        self.aw.close()

    async def bridge(self, path, hdrs, key):
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            })
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(WINDOW - 65535)
        self.flush()
        self.tasks.append(asyncio.create_task(self.server_pump()))

        try:
            await asyncio.wait_for(self.settings.wait(), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        if self.server_done.done() or not self.settings.is_set():
            log("no SETTINGS from the server")
            self.aw.write(simple_response(502))
            await self.close_client()
            return
        if self.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) != 1:
            log("the server did not announce SETTINGS_ENABLE_CONNECT_PROTOCOL=1")
            self.aw.write(simple_response(502, "No Extended CONNECT"))
            await self.close_client()
            return

        self.sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":path", path.encode("latin-1")),
            (b":authority", hdrs.get("host", f"{self.upstream[0]}:{self.upstream[1]}").encode("latin-1")),
            (b"sec-websocket-version", b"13"),
        ]
        for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
            if name in hdrs:
                headers.append((name.encode(), hdrs[name].encode("latin-1")))
        self.conn.send_headers(self.sid, headers, end_stream=False)
        self.flush()

        try:
            resp = await asyncio.wait_for(asyncio.shield(self.response), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            resp = None
        if resp is None:
            log("no response from the server")
            self.aw.write(simple_response(502))
            await self.close_client()
            return
        rh = {}
        for n, v in resp:
            rh.setdefault(n.decode("latin-1"), v.decode("latin-1"))
        status = int(rh.get(":status", "502"))
        if status != 200:
            self.aw.write(simple_response(status))
            await self.close_client()
            if self.conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
                self.conn.close_connection()
                self.flush()
            return

        accept = base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode()
        out = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
               "Connection: Upgrade", f"Sec-WebSocket-Accept: {accept}"]
        if "sec-websocket-extensions" in rh:
            out.append(f"Sec-WebSocket-Extensions: {rh['sec-websocket-extensions']}")
        if "sec-websocket-protocol" in rh:
            out.append(f"Sec-WebSocket-Protocol: {rh['sec-websocket-protocol']}")
        # DATA that came with the response (in the same read) waited in
        # `early`: it goes out after the 101.
        self.aw.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        for data in self.early:
            self.aw.write(data)
        self.early = None
        await self.relay()

    async def relay(self):
        self.tasks.append(asyncio.create_task(self.ack_pump()))
        client = asyncio.create_task(self.client_pump())
        self.tasks.append(client)
        done, _ = await asyncio.wait({client, self.server_done},
                                     return_when=asyncio.FIRST_COMPLETED)

        if self.server_done in done and self.server_done.result() == "reset":
            await self.abort_client()
            return

        if self.server_done in done:  # the server ended its side first
            try:
                await self.aw.drain()
                if self.aw.can_write_eof() and not self.aw.is_closing():
                    self.aw.write_eof()
            except (ConnectionError, OSError):
                pass
            how = await client
        else:
            how = client.result()

        # The client's side is over.
        if how == "reset":
            self.cancel_stream()
        elif how == "eof":
            try:
                self.conn.end_stream(self.sid)
                self.flush()
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
        if not self.server_done.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.server_done), SETTLE_TIMEOUT)
            except asyncio.TimeoutError:
                log("the server did not end the stream after the client's end")
                self.cancel_stream()
        if self.server_done.result() == "reset":
            await self.abort_client()
            return
        try:
            await self.aw.drain()
        except (ConnectionError, OSError):
            pass
        self.aw.close()
        await self.close_h2()

    def cancel_stream(self):
        try:
            self.conn.reset_stream(self.sid, h2.errors.ErrorCodes.CANCEL)
            self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    async def abort_client(self):
        # The server's bytes sent before the reset still go out first.
        try:
            await asyncio.wait_for(self.aw.drain(), 1.0)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        reset_close(self.aw)
        await self.close_h2()

    async def close_h2(self):
        if self.conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
            try:
                self.conn.close_connection()
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
        try:
            await self.sw.drain()
        except (ConnectionError, OSError):
            pass
        self.sw.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("upstream", help="the HTTP/2 server, HOST:PORT")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    upstream = (host or "127.0.0.1", int(port))

    async def handle(r, w):
        try:
            await Bridge(upstream, r, w).run()
        except Exception as e:  # one connection's bug must not stop the bridge
            log("connection failed:", repr(e))
            reset_close(w)

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, limit=READ)
    print(f"Bridge on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
