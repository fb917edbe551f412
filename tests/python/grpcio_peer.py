"""A grpcio peer of the tonic layers, for tests/tests/grpcio_interop.rs.

grpcio is a gRPC stack of its own (C core), unlike tonic. Nothing here is
generated from tests/proto/echo.proto: grpcio's generic API carries raw
bytes, and the three messages used (Plan, Item, Summary) are encoded by hand.
Keepalives are the canonical 22 bytes that Waypoint sends (and, in a gzip
call, a padded one: see PADDED_KEEPALIVE).

  watch   call ikatest.Echo/Watch, skip keepalives, report what came
  upload  call ikatest.Echo/Upload with keepalives after each item
  serve   serve ikatest.Echo/Watch with keepalives between the items

The clients print `key=value` lines; the test parses and asserts them.
"""

import argparse
import sys
import time
from concurrent import futures

import grpc

# field 100000000, wire type 2, the 16 bytes "inline_keepalive"
KEEPALIVE = bytes.fromhex("8290bcfd0210") + b"inline_keepalive"
# Also a keepalive (58 bytes): the field twice, an earlier value of 30 zero
# bytes, the last one canonical (last one wins). grpcio compresses only what
# gzip shrinks: the canonical 22 bytes grow to 42 and go out uncompressed,
# these 58 shrink to about 49, so this is how a keepalive leaves grpcio
# compressed.
PADDED_KEEPALIVE = bytes.fromhex("8290bcfd021e") + bytes(30) + KEEPALIVE
HEADER = "wp-inline-keepalives"
COLLISION_FIELD = 100000000
# grpcio follows http_proxy and friends by default; the tests are loopback only.
OPTIONS = [("grpc.enable_http_proxy", 0)]


def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        n |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return n, i


def unpack(buf):
    """The numbers of a packed repeated field."""
    i, out = 0, []
    while i < len(buf):
        n, i = read_varint(buf, i)
        out.append(n)
    return out


def fields(buf):
    """Top-level (field number, value) pairs; enough for Plan, Item, Summary."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = read_varint(buf, i)
        elif wire_type == 2:
            n, i = read_varint(buf, i)
            value, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unexpected wire type {wire_type} of field {number}")
        yield number, value


def encode(*pairs):
    """A message from (field number, int or bytes) pairs; proto3 omits zeros."""
    out = b""
    for number, value in pairs:
        if isinstance(value, bytes):
            out += varint(number << 3 | 2) + varint(len(value)) + value
        elif value:
            out += varint(number << 3) + varint(value)
    return out


def item(seq, size, collision=0):
    # The payload the Rust side's `item(seq, size)` has, so both can check it.
    return encode((1, seq), (2, bytes([seq % 251]) * size), (COLLISION_FIELD, collision))


def seq_and_intact(message):
    f = dict(fields(message))
    payload = f.get(2, b"")
    return f.get(1, 0), payload == bytes([f.get(1, 0) % 251]) * len(payload)


def report(**values):
    for key, value in values.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, list):
            value = ",".join(map(str, value))
        print(f"{key}={value}")


def watch(args):
    channel = grpc.insecure_channel(args.target, options=OPTIONS)
    call = channel.unary_stream("/ikatest.Echo/Watch")  # no (de)serializers: raw bytes
    plan = encode((1, args.count), (2, args.gap_ms), (3, args.size), (4, args.first_gap_ms))
    metadata = [(HEADER, "true")] if args.announce else []
    responses = call(plan, metadata=metadata, timeout=args.deadline)
    keepalives, seqs, all_intact, error = 0, [], True, "none"
    try:
        for message in responses:
            # What Waypoint's Go client does: a keepalive is not a message.
            if message == KEEPALIVE:
                keepalives += 1
                continue
            seq, ok = seq_and_intact(message)
            seqs.append(seq)
            all_intact = all_intact and ok
    except grpc.RpcError as e:
        error = e.code().name
    header = dict(responses.initial_metadata() or ()).get(HEADER, "absent")
    report(keepalives=keepalives, seqs=seqs, intact=all_intact, header=header, error=error)


def upload(args):
    channel = grpc.insecure_channel(args.target, options=OPTIONS)
    call = channel.stream_unary("/ikatest.Echo/Upload")
    sent = 0

    def requests():
        nonlocal sent
        for seq in range(args.count):
            yield item(seq, args.size)
            for _ in range(args.keepalives):
                time.sleep(args.gap_ms / 1000)
                sent += 1
                yield KEEPALIVE

    # A Waypoint client announces support; the server removes keepalives anyway.
    summary, _ = call.with_call(requests(), metadata=[(HEADER, "true")], timeout=args.deadline)
    count, seqs = 0, []
    for number, value in fields(summary):
        if number == 1:
            count = value
        elif number == 3:
            # prost packs repeated numbers into one length-delimited field.
            seqs += unpack(value) if isinstance(value, bytes) else [value]
    report(sent=sent, count=count, seqs=seqs)


def serve(args):
    def watch_handler(request, context):
        plan = dict(fields(request))
        count, gap_ms, size = plan.get(1, 0), plan.get(2, 0), plan.get(3, 0)
        # Before the first message: grpcio then compresses each one that
        # gzip makes smaller (see PADDED_KEEPALIVE).
        if args.gzip:
            context.set_compression(grpc.Compression.Gzip)
        # As a Waypoint server: keepalives only to a client that announced
        # support, and the same header back.
        announced = (HEADER, "true") in [tuple(m) for m in context.invocation_metadata()]
        if announced:
            context.send_initial_metadata([(HEADER, "true")])
        sent = 0
        for seq in range(count):
            if seq == args.collision_seq:
                # Field 100000000 as a varint: Item.collision. A COLLISION, not
                # a keepalive: it must reach the application.
                yield item(seq, args.collision_size, collision=1)
            else:
                yield item(seq, size)
            if announced and seq + 1 < count:
                for k in range(args.keepalives):
                    time.sleep(gap_ms / 1000 / (args.keepalives + 1))
                    sent += 1
                    yield PADDED_KEEPALIVE if args.gzip and k == 1 else KEEPALIVE
        context.set_trailing_metadata([("ika-keepalives-sent", str(sent))])

    handler = grpc.method_handlers_generic_handler(
        "ikatest.Echo", {"Watch": grpc.unary_stream_rpc_method_handler(watch_handler)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    report(port=port)
    sys.stdout.flush()
    # Serve until the test closes our stdin (or kills us).
    sys.stdin.read()
    server.stop(None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("watch")
    w.add_argument("--target", required=True)
    w.add_argument("--count", type=int, default=3)
    w.add_argument("--gap-ms", type=int, default=0)
    w.add_argument("--first-gap-ms", type=int, default=0)
    w.add_argument("--size", type=int, default=32)
    w.add_argument("--no-announce", dest="announce", action="store_false")
    w.add_argument("--deadline", type=float, default=15)
    u = commands.add_parser("upload")
    u.add_argument("--target", required=True)
    u.add_argument("--count", type=int, default=4)
    u.add_argument("--size", type=int, default=32)
    u.add_argument("--keepalives", type=int, default=2, help="after every item")
    u.add_argument("--gap-ms", type=int, default=20, help="before each keepalive")
    u.add_argument("--deadline", type=float, default=15)
    s = commands.add_parser("serve")
    s.add_argument("--keepalives", type=int, default=3, help="between two items")
    s.add_argument("--gzip", action="store_true", help="compress; the 2nd keepalive of each gap padded")
    s.add_argument("--collision-seq", type=int, default=-1)
    s.add_argument("--collision-size", type=int, default=8)
    args = parser.parse_args()
    {"watch": watch, "upload": upload, "serve": serve}[args.command](args)


if __name__ == "__main__":
    main()
