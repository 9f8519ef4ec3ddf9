#!/usr/bin/env python3
"""Writes a seed corpus of valid frames (layout: src/process/wire.rs) to fuzz/corpus/frame_decoder.

Usage: python3 fuzz/make_seeds.py   (from the crate root)
Each seed is a frame *body* (kind byte onwards) or a stream of length-prefixed frames.
"""
import os, struct

TASK, INIT, DONE, INIT_FAILED, INIT_OK = 1, 2, 10, 11, 12
BID = bytes(range(16))

def s(b):  # postcard string / bytes: varint length + bytes
    assert len(b) < 128
    return bytes([len(b)]) + b

def task(items, tramp=0x1234, captures=b""):
    out = bytes([TASK]) + BID + struct.pack("<QI", tramp, len(captures)) + captures
    out += struct.pack("<I", len(items))
    for i, a in items:
        out += struct.pack("<QI", i, len(a)) + a
    return out

def init(args, tramp=0x99, captures=b""):
    out = bytes([INIT]) + BID + struct.pack("<QI", tramp, len(captures)) + captures
    return out + struct.pack("<I", len(args)) + args

def done(results):
    out = bytes([DONE]) + struct.pack("<I", len(results))
    for i, tag, b in results:
        out += struct.pack("<QBI", i, tag, len(b)) + b
    return out

panicked = b"\x00" + s(b"boom") + b"\x01" + s(b"src/x.rs:1:2") + b"\x01" + s(b"bt")
codec = b"\x01" + s(b"alloc::string::String") + s(b"bad utf8")
refused = b"\x02" + s(b"different build")

def init_failed(err):
    return bytes([INIT_FAILED]) + struct.pack("<I", len(err)) + err

def framed(*bodies):
    return b"".join(struct.pack("<I", len(b)) + b for b in bodies)

seeds = {
    "task_empty": task([]),
    "task_one": task([(1, b"\x02\x03")]),
    "task_three": task([(1, b""), (2, b"abc"), (3, bytes(40))]),
    "task_bound": task([(1, b"\x01"), (2, b"\x02")], captures=b"\x03\x0a\x14\x1e"),
    "init": init(b"\x05hello"),
    "done_ok": done([(7, 0, b"\x2a")]),
    "done_mixed": done([(1, 0, b"ok"), (2, 1, panicked), (3, 1, codec), (4, 1, refused)]),
    "init_failed": init_failed(panicked),
    "init_ok": bytes([INIT_OK]),
    "stream": framed(task([(1, b"x")]), done([(1, 0, b"y")]), init_failed(refused)),
    "stream_init_ok": framed(init(b""), bytes([INIT_OK]), task([(2, b"")]), done([(2, 0, b"")])),
}
d = os.path.join(os.path.dirname(__file__), "corpus", "frame_decoder")
os.makedirs(d, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {d}")
