"""Minimal safetensors reader/writer for integration tests (numpy only; the format is an
8-byte little-endian header length, a JSON header, then the data area)."""
import json
import struct

import numpy as np

_DT = {"F32": np.float32, "I32": np.int32, "F16": np.float16, "I64": np.int64}


def read(path):
    """{name: (dtype_name, shape, raw_bytes)}"""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], data[a:b])
    return out


def array(entry):
    dt, shape, raw = entry
    if dt == "BF16":
        u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=_DT[dt]).reshape(shape)


def write(path, tensors):
    """tensors: {name: np.ndarray (float32 or int32)}"""
    hdr, blobs, off = {}, [], 0
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}[a.dtype]
        b = a.tobytes()
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def weight_chunks(model_file, version, skip_last=False, chunk=4096):
    """aha.v1 WeightChunk messages streaming a safetensors file's tensors (F32 as stored),
    header on the first; skip_last leaves the last tensor out (a truncated upload)."""
    from aha.v1 import weights_pb2
    t = read(model_file)
    names = sorted(t)
    total = sum(len(t[n][2]) for n in names)
    if skip_last:
        names = names[:-1]
    first = True
    for n in names:
        dt, shape, raw = t[n]
        for off in range(0, len(raw), chunk):
            c = weights_pb2.WeightChunk(name=n, dtype=dt, shape=shape, offset=off,
                                        data=raw[off:off + chunk], tensor_bytes=len(raw))
            if first:
                c.header.CopyFrom(weights_pb2.WeightHeader(version=version,
                                                           tensor_count=len(t), total_bytes=total))
                first = False
            yield c
