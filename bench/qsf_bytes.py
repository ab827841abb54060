#!/usr/bin/env python3
"""Weight bytes one decoded token reads, from a QSF file's own tensor directory (docs/qsf.md).

Decode reads every layer's weights once per token plus the output head; the embedding lookup
reads one row (negligible). With tied embeddings the output head *is* the embedding matrix, so its
bytes are counted once as the head.

usage: python3 bench/qsf_bytes.py MODEL.qsf            # prints a summary
       python3 bench/qsf_bytes.py MODEL.qsf --json
Also usable as a module: ``decode_bytes(path) -> dict``.
"""
import json
import struct
import sys

MAGIC = 0x51534631
PAYLOAD_MAGIC = 0x44545351


class QsfError(Exception):
    pass


def _payload_tensors(buf, start, end):
    """[(name, data_size)] of a v2 payload that starts at file offset `start`."""
    if start + 64 > end:
        raise QsfError(f"payload at {start} runs past its section")
    magic, n, size = struct.unpack_from("<IIQ", buf, start)
    if magic != PAYLOAD_MAGIC:
        raise QsfError(f"bad payload magic at {start}: {magic:#x}")
    if start + 64 + n * 128 > end or start + size > end:
        raise QsfError(f"payload at {start} larger than its section")
    out = []
    for i in range(n):
        e = start + 64 + i * 128
        name = bytes(buf[e:e + 64]).rstrip(b"\0").decode("utf-8")
        (data_size,) = struct.unpack_from("<Q", buf, e + 112)
        out.append((name, data_size))
    return out


def decode_bytes(path):
    """Bytes of weights read per decoded token (uncompressed sizes)."""
    with open(path, "rb") as f:
        head = f.read(256)
        if len(head) < 256:
            raise QsfError("file shorter than the 256-byte header")
        magic, version = struct.unpack_from("<II", head, 0)
        if magic != MAGIC:
            raise QsfError(f"not a QSF file (magic {magic:#x})")
        if version != 2:
            raise QsfError(f"QSF version {version}: only version 2 is read here")
        n_layers = struct.unpack_from("<I", head, 16)[0]
        emb_off, final_off = struct.unpack_from("<QQ", head, 72)
        tie = struct.unpack_from("<I", head, 156)[0]
        file_size = struct.unpack_from("<Q", head, 160)[0]
        emb_size = struct.unpack_from("<Q", head, 208)[0]
        final_size = struct.unpack_from("<Q", head, 224)[0]
        index = f.read(48 * n_layers)
        if len(index) < 48 * n_layers:
            raise QsfError("truncated layer index")
        layer_bytes = 0
        for i in range(n_layers):
            # weight_bytes: tensor data bytes of the layer (no directory/padding)
            layer_bytes += struct.unpack_from("<I", index, i * 48 + 32)[0]
        f.seek(emb_off)
        emb = f.read(emb_size)
        f.seek(final_off)
        fin = f.read(final_size)
    # embedding and final sections: 64-byte section header, then a payload
    emb_t = dict(_payload_tensors(emb, 64, len(emb)))
    fin_t = dict(_payload_tensors(fin, 64, len(fin)))
    head_bytes = fin_t.get("output")
    tied = head_bytes is None
    if tied:
        if "token_embd" not in emb_t:
            raise QsfError("no output head and no token_embd")
        head_bytes = emb_t["token_embd"]
    norm_bytes = sum(v for k, v in fin_t.items() if k != "output")
    return {
        "file_bytes": file_size,
        "n_layers": n_layers,
        "layer_bytes": layer_bytes,
        "output_head_bytes": head_bytes,
        "output_head_tied": tied or bool(tie),
        "final_norm_bytes": norm_bytes,
        "embedding_bytes": emb_t.get("token_embd", 0),
        "decode_bytes_per_token": layer_bytes + head_bytes + norm_bytes,
    }


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        d = decode_bytes(sys.argv[1])
    except (OSError, QsfError, struct.error, UnicodeDecodeError) as e:
        print(f"error: {sys.argv[1]}: {e}", file=sys.stderr)
        return 1
    if "--json" in sys.argv[2:]:
        print(json.dumps(d))
    else:
        print(f"layers ({d['n_layers']}): {d['layer_bytes'] / 1e6:.2f} MB")
        print(f"output head{' (tied to token_embd)' if d['output_head_tied'] else ''}: "
              f"{d['output_head_bytes'] / 1e6:.2f} MB")
        print(f"bytes read per decoded token: {d['decode_bytes_per_token'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
