#!/usr/bin/env python3
"""Write the small seed corpora in fuzz/seeds/<target>/ (docs/fuzzing.md).

    python3 fuzz/make_seeds.py [REPO_DIR]

Structured seeds (CBOR payloads, tree streams, configs, agent messages) are
built here by hand from docs/format.md and the proto; with REPO_DIR (a
file:// repository made by `trireme-agent init` and `backup`), its real
config, packs, index objects and manifests are added as raw seeds. Each
seed's first byte is the target's mode byte where the target has one.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor(v):
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, int):
        return cbor_head(0, v) if v >= 0 else cbor_head(1, -1 - v)
    if isinstance(v, bytes):
        return cbor_head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return cbor_head(3, len(b)) + b
    if isinstance(v, list):
        return cbor_head(4, len(v)) + b"".join(cbor(x) for x in v)
    if isinstance(v, dict):
        return cbor_head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())
    raise TypeError(v)


def blob(i, off):
    return {"id": bytes([i]) * 32, "offset": off, "length": 40, "raw_len": 12, "zstd": bool(i & 1)}


def entry(path, kind, chunks=(), target=b""):
    e = {"path": path, "kind": kind, "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 1,
         "ctime_ns": 2, "inode": 3, "size": 12 * len(chunks)}
    if target:
        e["target"] = target
    if chunks:
        e["chunks"] = [bytes([c]) * 32 for c in chunks]
    return e


def stream(entries):
    out = b""
    for e in entries:
        c = cbor(e)
        out += struct.pack("<I", len(c)) + c
    return out


def pb_varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb(field, wire, payload):
    key = pb_varint(field << 3 | wire)
    if wire == 0:
        return key + pb_varint(payload)
    if wire == 1:
        return key + payload
    return key + pb_varint(len(payload)) + payload


def pbs(field, s):
    return pb(field, 2, s.encode() if isinstance(s, str) else s)


SEEDS = {}


def seed(target, name, data):
    SEEDS.setdefault(target, []).append((name, data))


def structured():
    summary = {k: 1 for k in ("files", "dirs", "others", "bytes", "files_unchanged", "bytes_read",
                              "new_chunks", "new_bytes", "packs", "uploaded_bytes", "errors")}
    index = {"packs": [{"id": b"\x01" * 32, "size": 400, "key": b"\x01" + b"\xab" * 68,
                        "blobs": [blob(1, 5), blob(2, 45)]}]}
    manifest = {"source": "pg", "source_kind": "volume", "host": "web-1", "started_ns": 1,
                "finished_ns": 2, "parent": b"\x05" * 32, "content": "tree",
                "tree": [b"\x07" * 32], "position": {"backup_ts": "42"}, "tags": ["t"],
                "summary": summary}
    seed("index_object", "cbor", b"\x00" + cbor(index))
    seed("snapshot_manifest", "cbor", b"\x00" + cbor(manifest))
    seed("snapshot_manifest", "cbor-stream", b"\x00" + cbor(dict(manifest, content="stream", parent=None)))
    header = cbor([blob(1, 5), blob(2, 45)])
    seed("pack", "header", b"\x01" + struct.pack("<H", 80) + b"\x00" * 80 + header)
    seed("pack", "blob-raw", b"\x02\x02" + struct.pack("<I", 5) + b"hello")
    seed("pack", "blob-zstd", b"\x02\x01" + struct.pack("<I", 12)
         + bytes.fromhex("28b52ffd200c610000") + b"hello world!")
    tree = stream([entry(b"", "dir"), entry(b"a", "dir"), entry(b"a/f", "file", [1, 2]),
                   entry(b"a/l", "symlink", target=b"f"), entry(b"b", "file")])
    seed("tree_stream", "tree", tree)
    seed("tree_stream", "stream", stream([entry(b"stdin", "file", [3])]))
    seed("tree_order", "tree", b"d\nda\nfa/f\nla/l\nda/s\nfa/s/x\nfb")
    seed("tree_order", "stream", b"fstdin")
    cfg = {"version": 1, "id": b"\x11" * 16, "created": 1700000000,
           "chunker": {"min": 262144, "avg": 1048576, "max": 4194304},
           "id_key": b"\x01" + b"\xab" * 68, "mac": b"\x00" * 32}
    seed("repo_config", "cbor", b"TRCF\x01" + cbor(cfg))
    seed("wrapped_key", "scheme1", b"\x81" + b"\x00" * 8 + b"\xab" * 60)
    seed("wrapped_key", "other-scheme", b"\x02" + b"\x00" * 68)
    for u in ("file:///var/lib/trireme/repo", "s3://bkt/hosts/web1",
              "s3://bkt/x/?endpoint=http://127.0.0.1:3900&region=garage&allow_http=true",
              "s3://bkt/?endpoint=https://s3.example.com&path_style=false"):
        seed("location_url", str(len(SEEDS.get("location_url", []))), u.encode())
    seed("s3_credentials", "plain", b"# garage\naccess_key_id = GK1\nsecret_access_key = 'abc'\n")
    seed("s3_credentials", "aws", b"[default]\naws_access_key_id=A\naws_secret_access_key=\"s\"\naws_session_token=t\n")
    for name in ("agent.toml", "agent-platform.toml"):
        seed("agent_config", name, open(os.path.join(ROOT, "deploy/examples", name), "rb").read())
    seed("controller_config", "controller.toml",
         open(os.path.join(ROOT, "deploy/examples/controller.toml"), "rb").read())
    seed("policies", "policy.toml", open(os.path.join(ROOT, "deploy/examples/policy.toml"), "rb").read())
    job = "0190f5a2-7b3c-7def-8123-456789abcdef"
    # Field numbers from proto/proto/trireme/v1/agent.proto.
    summary_pb = pb(1, 0, 3) + pb(4, 0, 1000) + pb(12, 1, struct.pack("<d", 1.5))
    position = pbs(1, "backup_ts") + pbs(2, "42")
    result = (pbs(1, job) + pb(2, 0, 1) + pbs(4, "ab" * 32) + pbs(5, summary_pb)
              + pbs(6, position) + pb(7, 0, 1700000000000000000) + pbs(8, "primary")
              + pbs(9, "keys=3"))
    source = pbs(1, "redis") + pbs(2, "redis") + pbs(3, pbs(1, "path") + pbs(2, "/var"))
    hello = (pbs(1, "web-1") + pbs(2, "0.1.0") + pbs(3, "host") + pbs(4, source)
             + pbs(5, job) + pbs(6, result) + pb(7, 0, 2))
    volume = pbs(1, "redis") + pbs(2, "/var") + pb(3, 0, 100) + pb(4, 0, 80)
    # agent_message: a mode byte (1: an honest Hello first, 2: the queued
    # job's id swapped in, 4: as web-2), then length-delimited messages.
    def session(mode, *msgs):
        return bytes([mode]) + b"".join(pb_varint(len(m)) + m for m in msgs)
    m_hello = pbs(1, hello)
    m_beat = pbs(2, pb(1, 0, 1700000000) + pbs(2, job) + pbs(3, volume))
    m_progress = pbs(3, pbs(1, job) + pb(2, 0, 10) + pb(3, 0, 5) + pb(6, 0, 100))
    m_result = pbs(4, result)
    m_failed = pbs(4, pbs(1, job) + pbs(3, "disk full"))
    seed("agent_message", "hello", session(0, m_hello))
    seed("agent_message", "session", session(1, m_beat, m_progress, m_result))
    seed("agent_message", "job-success", session(3, m_progress, m_result))
    seed("agent_message", "job-failed", session(3, m_failed))
    seed("agent_message", "other-agent", session(7, m_result))
    assign = (pbs(1, job) + pbs(2, "redis") + pb(3, 0, 1) + pbs(5, "ab" * 32)
              + pbs(7, pbs(1, "loc1") + pbs(2, "file:///var/lib/trireme/repo")) + pb(8, 0, 1))
    seed("controller_message", "assign", pbs(1, assign))
    seed("controller_message", "assign-traversal", pbs(1, pbs(1, "../../etc") + pbs(2, "redis")))
    seed("controller_message", "cancel", pbs(2, pbs(1, job) + pbs(2, "operator")))
    seed("controller_message", "ack", pbs(3, pbs(1, job)))


def from_repo(repo):
    for dirpath, _, files in os.walk(repo):
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            data = open(p, "rb").read()
            if len(data) > 64 * 1024:
                continue
            kind = os.path.relpath(p, repo).split(os.sep)[0]
            if kind == "config":
                seed("repo_config", "real", data)
            elif kind == "packs":
                seed("pack", "real-" + f[:8], b"\x00" + data)
                h, w = struct.unpack("<IH", data[-10:-4])
                seed("wrapped_key", "real-" + f[:8], data[-10 - w:-10])
            elif kind == "index":
                seed("index_object", "real-" + f[:8], b"\x00" + data)
            elif kind == "snapshots":
                seed("snapshot_manifest", "real-" + f[:8], b"\x00" + data)


structured()
if len(sys.argv) > 1:
    from_repo(sys.argv[1])
for target, items in SEEDS.items():
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for name, data in items:
        with open(os.path.join(d, "seed-" + name), "wb") as fh:
            fh.write(data)
print(sum(len(v) for v in SEEDS.values()), "seeds in", len(SEEDS), "targets")
