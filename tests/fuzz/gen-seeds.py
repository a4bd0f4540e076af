#!/usr/bin/python3
# Write the small seed files of the .npy and IDX fuzz targets
# (tests/corpus/npy, tests/corpus/idx).  Deterministic; standard library only.
#   tests/fuzz/gen-seeds.py
import gzip
import os
import struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def npy(name, descr, shape, payload, version=(1, 0), fortran=False):
    shp = "(" + "".join(f"{d}, " if len(shape) == 1 else f"{d}, " for d in shape)
    shp = shp[:-2] + ("," if len(shape) == 1 else "") + ")" if shape else "()"
    hdr = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shp}, }}"
    lenfmt = "<H" if version[0] == 1 else "<I"
    pre = 6 + 2 + struct.calcsize(lenfmt)
    pad = (64 - (pre + len(hdr) + 1) % 64) % 64
    hdr = hdr + " " * pad + "\n"
    data = b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, len(hdr)) + hdr.encode("latin1")
    with open(os.path.join(root, "npy", name), "wb") as f:
        f.write(data + payload)


def idx(name, dims, payload, gz=False):
    data = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload
    if gz:
        data = gzip.compress(data, mtime=0)
    with open(os.path.join(root, "idx", name), "wb") as f:
        f.write(data)


os.makedirs(os.path.join(root, "npy"), exist_ok=True)
os.makedirs(os.path.join(root, "idx"), exist_ok=True)
npy("f32-2x3.npy", "<f4", (2, 3), struct.pack("<6f", 0, 1, 2, 3, 4.5, -1))
npy("f64-be-4.npy", ">f8", (4,), struct.pack(">4d", 1, 2, 3, 4))
npy("u8-1x1x4x4.npy", "|u1", (1, 1, 4, 4), bytes(range(16)))
npy("i8-3.npy", "|i1", (3,), struct.pack("3b", -1, 0, 1))
npy("i16-2x2.npy", "<i2", (2, 2), struct.pack("<4h", -2, 3, 400, -32768))
npy("i32-be-2.npy", ">i4", (2,), struct.pack(">2i", 7, -7))
npy("i64-scalar.npy", "<i8", (), struct.pack("<q", 42))
npy("f32-empty.npy", "<f4", (0, 3), b"")
npy("f32-v2.npy", "<f4", (2,), struct.pack("<2f", 1, 2), version=(2, 0))
npy("f32-v3.npy", "<f4", (1,), struct.pack("<f", 1), version=(3, 0))
npy("fortran.npy", "<f4", (2, 2), struct.pack("<4f", 1, 2, 3, 4), fortran=True)
idx("images-2x3x3.idx", (2, 3, 3), bytes(range(18)))
idx("labels-5.idx", (5,), bytes([0, 1, 2, 9, 3]))
idx("images-2x3x3.idx.gz", (2, 3, 3), bytes(range(18)), gz=True)
idx("rank4.idx", (1, 2, 2, 2), bytes(range(8)))
