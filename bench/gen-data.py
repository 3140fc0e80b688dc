#!/usr/bin/env python3
"""Deterministic benchmark data set for the Trireme / restic / borg comparison.

Generates a tree that looks like a chat platform's datastores:

  ~40 %  application logs      logs/<service>/<service>.log.<date>   (compressible text)
  ~25 %  database dumps        db/<cluster>/<table>.sql              (SQL INSERT lines)
  ~35 %  media                 media/<yyyy>/<mm>/<id>.<ext>          (random bytes, 1-50 MiB)
  plus a few thousand small files (1-64 KiB) under uploads/ in nested
  directories (NDJSON exports, chat transcripts, thumbnails); their bytes
  count against the text and media shares above.

Everything is derived from --seed: the file list, every file's bytes and
every file's mtime.  Each file has its own RNG seeded from (seed, path), so
files can be generated in parallel and single files can be re-created.

Modes:
  (default)   make sure OUT holds the base data set for (seed, size).  A
              stamp file OUT.stamp.json (next to OUT, not inside it) records
              seed/size/state; if it matches and the tree is in its base state
              nothing is written.  If the tree was mutated, only the touched
              files are re-created and the added ones deleted.
  --mutate    bring the tree to its base state, then change ~5 % of its
              bytes deterministically: append to some logs, rewrite a region
              in the middle of some dumps, add new media files, rewrite a few
              and delete a few small files, touch the mtimes of some others.

Python 3 standard library only.  Same seed and size -> same bytes (with the
same Python minor version; random.Random's helpers are stable in practice).
"""

import argparse
import array
import calendar
import hashlib
import json
import os
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor

GEN_VERSION = 1
KiB = 1024
MiB = 1024 * 1024
BASE_MTIME = 1_700_000_000          # 2023-11-14
TOUCH_MTIME = BASE_MTIME + 90 * 86400
MUTATE_FRACTION = 0.05


def subseed(seed, *parts):
    text = str(seed) + "".join("\x00" + str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


# --------------------------------------------------------------------------
# Seed-independent lookup tables (built from a fixed RNG, identical for every
# seed).  Random picks index them with bytes from the per-file RNG, which is
# several times faster than random.choices().
# --------------------------------------------------------------------------

_tab_rng = random.Random(20240601)


def _table(items, weights, size):
    return _tab_rng.choices(items, weights=weights, k=size)


def _zipf(n, s):
    return [1.0 / (i + 1) ** s for i in range(n)]


_SYLL = ["ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "an", "el", "or", "un",
         "be", "da", "fi", "go", "hu", "je", "pa", "qu", "sa", "te", "wo", "zy",
         "ch", "st", "tr", "pl", "en", "in", "on", "ar", "er", "is", "ut", "ex"]
_COMMON = ["the", "a", "to", "and", "is", "it", "you", "i", "we", "that", "for",
           "on", "in", "ok", "yes", "no", "lol", "thanks", "please", "can", "will",
           "deploy", "meeting", "tomorrow", "today", "link", "pr", "review", "build",
           "ship", "fix", "bug", "prod", "staging", "coffee", "lunch", "here", "done"]
_VOCAB = sorted({"".join(_tab_rng.choice(_SYLL) for _ in range(_tab_rng.randint(1, 4))) for _ in range(6000)})
_tab_rng.shuffle(_VOCAB)
_VOCAB = _COMMON + _VOCAB
WORDS = _table(_VOCAB, _zipf(len(_VOCAB), 1.05), 65536)          # Zipf-like word use
_USER_IDS = ["u%07d" % (1000000 + i * 7919 % 200000) for i in range(200000)]
USERS = _table(_USER_IDS, _zipf(len(_USER_IDS), 0.7), 65536)     # some users are very active
CHANNELS = ["c%06d" % (300000 + i * 104729 % 50000) for i in range(65536)]
NUMS = [str(1 + i % 4096) for i in range(65536)]
LATS = [str(int(_tab_rng.expovariate(1 / 40.0))) for _ in range(65536)]
EMOJI = _table([":thumbsup:", ":heart:", ":joy:", ":tada:", ":eyes:", ":fire:", ":rocket:",
                ":100:", ":pray:", ":white_check_mark:", ":thinking_face:", ":+1:"],
               _zipf(12, 1.0), 256)
CLIENTS = ["ios/5.2.1", "ios/5.3.0", "android/5.2.3", "android/5.3.0", "web/2024.05.1",
           "desktop-mac/3.9.2", "desktop-win/3.9.2", "desktop-linux/3.9.1", "bot/1.0"]
SERVICES = ["chat-gateway", "message-router", "presence", "push-notify", "auth",
            "media-proxy", "search-indexer", "api"]
LEVELS = _table(["DEBUG", "INFO ", "WARN ", "ERROR"], [15, 75, 7, 3], 256)
STATUSES = ["online", "away", "dnd", "offline"]
PROVIDERS = ["apns", "fcm", "webpush"]
ROLES = _table(["member", "admin", "guest"], [85, 5, 10], 256)
# Positional fields: 0 time, 1 millis, 2 level+service head, 3 request id,
# 4 user, 5 channel, 6 number, 7 latency, 8 second request id.
LOG_TEMPLATES = [
    ('{0}.{1:03d}Z {2}{3} msg="message delivered" user={4} channel={5} bytes={6} latency_ms={7}\n', 30),
    ('{0}.{1:03d}Z {2}{3} {{"event":"message.send","user":"{4}","channel":"{5}","size":{6},"client":"%(k)s"}}\n', 20),
    ('{0}.{1:03d}Z {2}{3} msg="websocket connected" user={4} client=%(k)s conn_id={3}{8}\n', 8),
    ('{0}.{1:03d}Z {2}{3} msg="websocket closed" user={4} code=1000 duration_s={6}\n', 6),
    ('{0}.{1:03d}Z {2}{3} {{"event":"presence.update","user":"{4}","status":"%(s)s","ts_skew_ms":{7}}}\n', 10),
    ('{0}.{1:03d}Z {2}{3} msg="push sent" user={4} provider=%(p)s status=200 latency_ms={7}\n', 8),
    ('{0}.{1:03d}Z {2}{3} GET /api/v4/channels/{5}/messages?limit=50 200 {7}ms user={4}\n', 8),
    ('{0}.{1:03d}Z {2}{3} POST /api/v4/messages 201 {7}ms user={4} bytes={6}\n', 5),
    ('{0}.{1:03d}Z {2}{3} msg="token refreshed" user={4} ttl_s=3600\n', 2),
    ('{0}.{1:03d}Z {2}{3} msg="slow query" table=messages channel={5} duration_ms={6} rows={7}\n', 1),
    ('{0}.{1:03d}Z {2}{3} msg="rate limited" user={4} route=/api/v4/messages retry_after_ms={7}\n', 1),
    ('{0}.{1:03d}Z {2}{3} msg="upstream error" err="context deadline exceeded" retry={7} req_bytes={6}\n', 1),
]
HMS = ["%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) for s in range(86400)]
_DAYS = {}


def day_str(day):
    d = _DAYS.get(day)
    if d is None:
        d = _DAYS[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
    return d


def idx16(rng, n):
    a = array.array("H")
    a.frombytes(rng.randbytes(2 * n))
    if sys.byteorder == "big":
        a.byteswap()
    return a


# --------------------------------------------------------------------------
# Content generators.  Each yields ASCII str blocks; write_exact() cuts the
# stream at exactly `size` bytes, always ending the file with a newline.
# --------------------------------------------------------------------------

def log_blocks(rng, service, t0_ms):
    pid = rng.randint(100, 60000)
    heads = ["%s %s[%d] req=" % (lv, service, pid) for lv in LEVELS]
    tmpls = [t % {"k": rng.choice(CLIENTS), "s": rng.choice(STATUSES), "p": rng.choice(PROVIDERS)}
             for t in rng.choices([t for t, _ in LOG_TEMPLATES], weights=[w for _, w in LOG_TEMPLATES], k=256)]
    t = t0_ms
    last_sec = -1
    prefix = ""
    n = 8192
    while True:
        deltas = rng.randbytes(n)
        lv = rng.randbytes(n)
        tp = rng.randbytes(n)
        ui = idx16(rng, n)
        ci = idx16(rng, n)
        ni = idx16(rng, n)
        li = idx16(rng, n)
        rids = rng.randbytes(4 * n).hex()
        out = []
        app = out.append
        for i in range(n):
            t += deltas[i] & 31
            sec = t // 1000
            if sec != last_sec:
                last_sec = sec
                prefix = day_str(sec // 86400) + "T" + HMS[sec % 86400]
            app(tmpls[tp[i]].format(prefix, t % 1000, heads[lv[i]], rids[8 * i:8 * i + 8], USERS[ui[i]],
                                    CHANNELS[ci[i]], NUMS[ni[i]], LATS[li[i]], rids[8 * i - 8:8 * i]))
        yield "".join(out)


def _texts(rng, lengths):
    """One string of random words per entry of lengths."""
    wi = idx16(rng, sum(lengths))
    words = [WORDS[i] for i in wi]
    res = []
    p = 0
    for ln in lengths:
        res.append(" ".join(words[p:p + ln]))
        p += ln
    return res


def _lengths(rng, n, lo, hi):
    span = hi - lo + 1
    return [lo + b % span for b in rng.randbytes(n)]


TABLES = {
    "messages": "id bigint, channel_id varchar(16), author_id varchar(16), created_at timestamp, "
                "body text, reply_to bigint, edited boolean",
    "users": "id bigint, username varchar(64), email varchar(128), display_name varchar(128), "
             "created_at timestamp, status varchar(16), avatar_url text",
    "channels": "id varchar(16), name varchar(80), topic text, created_at timestamp, is_private boolean",
    "reactions": "message_id bigint, user_id varchar(16), emoji varchar(32), created_at timestamp",
    "memberships": "channel_id varchar(16), user_id varchar(16), role varchar(16), joined_at timestamp, "
                   "last_read_id bigint",
}


def _rows(rng, table, n, state):
    """Return n SQL value tuples as strings; state carries ids/timestamps."""
    ids = range(state["id"], state["id"] + n)
    state["id"] += n
    stamps = []
    s = state["sec"]
    for d in rng.randbytes(n):
        s += d & 15
        stamps.append(day_str(s // 86400) + " " + HMS[s % 86400])
    state["sec"] = s
    users = [USERS[i] for i in idx16(rng, n)]
    chans = [CHANNELS[i] for i in idx16(rng, n)]
    small = rng.randbytes(n)
    if table == "messages":
        bodies = _texts(rng, _lengths(rng, n, 1, 40))
        return ["(%d,'%s','%s','%s','%s',%s,%s)" % (
            i, c, u, t, b, (str(i - 1 - r) if r < 24 else "NULL"), ("true" if r == 99 else "false"))
            for i, c, u, t, b, r in zip(ids, chans, users, stamps, bodies, small)]
    if table == "users":
        names = _texts(rng, [2] * n)
        return ["(%d,'%s','%s@example.%s','%s','%s','%s','https://cdn.example.net/avatars/%s/%08x.png')" % (
            i, nm.replace(" ", "_"), nm.replace(" ", "."), ("com" if i % 3 else "org"), nm.title(),
            t, STATUSES[r & 3], u, i * 2654435761 % (1 << 32))
            for i, nm, t, r, u in zip(ids, names, stamps, small, users)]
    if table == "channels":
        names = _texts(rng, _lengths(rng, n, 1, 3))
        topics = _texts(rng, _lengths(rng, n, 0, 15))
        return ["('%s','%s','%s','%s',%s)" % (
            c, nm.replace(" ", "-"), tp, t, ("true" if r < 50 else "false"))
            for c, nm, tp, t, r in zip(chans, names, topics, stamps, small)]
    if table == "reactions":
        return ["(%d,'%s','%s','%s')" % (i * 3 + 17, u, EMOJI[r], t)
                for i, u, r, t in zip(ids, users, small, stamps)]
    return ["('%s','%s','%s','%s',%d)" % (c, u, ROLES[r], t, i * 13)
            for i, c, u, r, t in zip(ids, chans, users, small, stamps)]


def sql_blocks(rng, table, style, header=True, start_id=None):
    state = {"id": start_id if start_id is not None else rng.randint(1, 10 ** 9),
             "sec": BASE_MTIME - rng.randint(10 ** 6, 10 ** 8)}
    if header:
        cols = TABLES[table]
        if style == "pg":
            yield ("--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n"
                   "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\n"
                   "CREATE TABLE public.%s (%s);\n\n" % (table, cols))
        else:
            yield ("-- MySQL dump 10.13  Distrib 8.0.36\n/*!40101 SET NAMES utf8mb4 */;\n\n"
                   "DROP TABLE IF EXISTS `%s`;\nCREATE TABLE `%s` (%s);\n\nLOCK TABLES `%s` WRITE;\n"
                   % (table, table, cols, table))
    while True:
        rows = _rows(rng, table, 4096, state)
        if style == "pg":
            pre = "INSERT INTO public.%s VALUES " % table
            yield "".join([pre + r + ";\n" for r in rows])
        else:
            pre = "INSERT INTO `%s` VALUES " % table
            yield "".join([pre + ",".join(rows[p:p + 40]) + ";\n" for p in range(0, len(rows), 40)])


def ndjson_blocks(rng):
    t = BASE_MTIME - rng.randint(10 ** 5, 10 ** 7)
    while True:
        n = 64
        bodies = _texts(rng, _lengths(rng, n, 1, 30))
        ch = rng.choice(CHANNELS)
        out = []
        for u, b, d in zip(idx16(rng, n), bodies, rng.randbytes(n)):
            t += d & 63
            out.append('{"type":"message","channel":"%s","user":"%s","ts":"%d.%06d","text":"%s"}\n'
                       % (ch, USERS[u], t, d * 3907, b))
        yield "".join(out)


def transcript_blocks(rng):
    t = BASE_MTIME - rng.randint(10 ** 5, 10 ** 7)
    names = _texts(rng, [1] * 8)
    while True:
        n = 64
        bodies = _texts(rng, _lengths(rng, n, 1, 25))
        out = []
        for b, d in zip(bodies, rng.randbytes(n)):
            t += d & 127
            out.append("[%s %s] %s: %s\n" % (day_str(t // 86400), HMS[t % 86400], names[d & 7], b))
        yield "".join(out)


def write_exact(f, blocks, size):
    left = size
    for blk in blocks:
        if left <= 0:
            return
        if len(blk) >= left:
            f.write((blk[:left - 1] + "\n").encode("ascii"))
            return
        f.write(blk.encode("ascii"))
        left -= len(blk)


def write_random(f, rng, size):
    left = size
    while left > 0:
        k = min(left, 4 * MiB)
        f.write(rng.randbytes(k))
        left -= k


def log_start_ms(path):
    """Logs start at midnight of the date in their name (…/svc.log.YYYY-MM-DD)."""
    return calendar.timegm(time.strptime(path[-10:], "%Y-%m-%d")) * 1000


def text_blocks_for(kind, rng, path):
    if kind == "log":
        service = path.split("/")[1]
        return log_blocks(rng, service, log_start_ms(path) + rng.randint(0, 3600 * 1000))
    if kind == "sql":
        table = os.path.basename(path)[:-4].split("-")[0]
        return sql_blocks(rng, table, "pg" if rng.random() < 0.5 else "mysql")
    if kind == "small-json":
        return ndjson_blocks(rng)
    if kind == "small-text":
        return transcript_blocks(rng)
    raise ValueError(kind)


def generate_file(root, entry):
    path, kind, size, fseed, mtime = entry
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    rng = random.Random(fseed)
    tmp = full + ".tmp-gen"
    with open(tmp, "wb", buffering=1 << 20) as f:
        if kind in ("media", "small-bin"):
            write_random(f, rng, size)
        else:
            write_exact(f, text_blocks_for(kind, rng, path), size)
    os.replace(tmp, full)
    os.utime(full, (mtime, mtime))
    return size


# --------------------------------------------------------------------------
# Plan: the deterministic list of files (path, kind, size, file seed, mtime)
# --------------------------------------------------------------------------

def make_plan(seed, size_mib):
    total = size_mib * MiB
    rng = random.Random(subseed(seed, "plan"))
    entries = []

    def add(path, kind, size):
        entries.append([path, kind, size])

    # Small files in nested directories.
    n_small = max(40, min(4000, int(total * 0.045 / (33 * KiB))))
    tenants = ["t%02d" % i for i in range(12)]
    small_text = small_bin = 0
    for i in range(n_small):
        kind = rng.choices(["small-json", "small-text", "small-bin"], cum_weights=[35, 60, 100])[0]
        size = rng.randint(1 * KiB, 64 * KiB)
        d = "uploads/%s/%d/%02d" % (rng.choice(tenants), rng.randint(2022, 2024), rng.randint(1, 12))
        if kind == "small-bin":
            d += "/thumbs"
            name = "%012x.webp" % rng.getrandbits(48)
            small_bin += size
        elif kind == "small-json":
            name = "export-%06d.ndjson" % i
            small_text += size
        else:
            d += "/transcripts"
            name = "chat-%06d.txt" % i
            small_text += size
        add(d + "/" + name, kind, size)

    def fill(budget, lo, hi, make_path, kind):
        n = 0
        while budget >= min(lo, 256 * KiB):
            size = min(budget, rng.randint(lo, hi))
            add(make_path(n), kind, size)
            budget -= size
            n += 1

    # Logs: ~40 % minus the small text files.
    fill(int(total * 0.40) - small_text, 2 * MiB, 48 * MiB,
         lambda n: "logs/%s/%s.log.%s" % (SERVICES[n % len(SERVICES)], SERVICES[n % len(SERVICES)],
                                          time.strftime("%Y-%m-%d", time.gmtime(BASE_MTIME - 86400 * (n // len(SERVICES))))),
         "log")
    # Database dumps: ~25 %.
    tables = ["messages", "messages", "messages", "reactions", "users", "memberships", "channels"]
    fill(int(total * 0.25), 4 * MiB, 96 * MiB,
         lambda n: "db/chat-%02d/%s.sql" % (n // len(tables), tables[n % len(tables)])
         if tables[n % len(tables)] != "messages" or n % len(tables) == 0
         else "db/chat-%02d/messages-part%d.sql" % (n // len(tables), n % len(tables)),
         "sql")
    # Media: ~35 % minus the thumbnails.
    exts = ["jpg", "png", "mp4", "webm", "m4a", "pdf"]
    fill(int(total * 0.35) - small_bin, 1 * MiB, 50 * MiB,
         lambda n: "media/%d/%02d/%016x.%s" % (2022 + n % 3, 1 + n % 12, rng.getrandbits(64), rng.choice(exts)),
         "media")

    plan = []
    for idx, (path, kind, size) in enumerate(entries):
        plan.append((path, kind, size, subseed(seed, "file", path), BASE_MTIME + idx * 37))
    return plan


# --------------------------------------------------------------------------
# Mutation plan: decided from (seed, plan) alone, so it can also be undone
# --------------------------------------------------------------------------

def mutation_plan(seed, plan):
    rng = random.Random(subseed(seed, "mutate"))
    total = sum(e[2] for e in plan)
    budget = int(total * MUTATE_FRACTION)
    by_kind = {}
    for e in plan:
        by_kind.setdefault(e[1], []).append(e)
    logs = by_kind.get("log", [])
    dumps = by_kind.get("sql", [])
    small = [e for e in plan if e[1].startswith("small-")]
    small_text = [e for e in small if e[1] != "small-bin"]

    appends = []
    if logs:
        chosen = rng.sample(logs, max(1, len(logs) // 2))
        per = int(budget * 0.40) // len(chosen)
        appends = [(e[0], per) for e in chosen]
    rewrites = []
    if dumps:
        chosen = rng.sample(dumps, max(1, (len(dumps) + 2) // 3))
        per = int(budget * 0.30) // len(chosen)
        for e in chosen:
            region = min(per, e[2] // 2)
            rewrites.append((e[0], e[2] // 2 - region // 2, region))
    new_media = []
    left = int(budget * 0.25)
    n = 0
    while left >= 256 * KiB:
        size = min(left, rng.randint(1 * MiB, 50 * MiB))
        new_media.append(("media/2025/01/new-%04d.mp4" % n, size))
        left -= size
        n += 1
    small_rewrites = [e[0] for e in rng.sample(small_text, min(len(small_text), 20))]
    rest = [e for e in small if e[0] not in set(small_rewrites)]
    deletes = [e[0] for e in rng.sample(rest, min(len(rest), 5))]
    touched_set = set(a[0] for a in appends) | set(r[0] for r in rewrites) | set(small_rewrites) | set(deletes)
    untouched = [e for e in plan if e[0] not in touched_set]
    touches = [e[0] for e in rng.sample(untouched, max(1, len(untouched) * 3 // 100))] if untouched else []
    return {"appends": appends, "rewrites": rewrites, "new_media": new_media,
            "small_rewrites": small_rewrites, "deletes": deletes, "touches": touches}


def apply_mutation(root, seed, plan, mp):
    entries = {e[0]: e for e in plan}
    stats = {"appended_bytes": 0, "rewritten_bytes": 0, "new_bytes": 0, "deleted_bytes": 0,
             "small_rewritten_bytes": 0}
    now_mtime = TOUCH_MTIME
    for path, nbytes in mp["appends"]:
        rng = random.Random(subseed(seed, "mutate-append", path))
        service = path.split("/")[1]
        full = os.path.join(root, path)
        with open(full, "ab") as f:
            write_exact(f, log_blocks(rng, service, log_start_ms(path) + 6 * 3600 * 1000), nbytes)
        os.utime(full, (now_mtime, now_mtime))
        stats["appended_bytes"] += nbytes
    for path, offset, region in mp["rewrites"]:
        rng = random.Random(subseed(seed, "mutate-rewrite", path))
        full = os.path.join(root, path)
        table = os.path.basename(path)[:-4].split("-")[0]
        with open(full, "r+b") as f:
            f.seek(offset)
            head = f.read(64 * KiB)
            nl = head.find(b"\n")
            start = offset + (nl + 1 if nl >= 0 else 0)
            f.seek(start)
            write_exact(f, sql_blocks(rng, table, "pg", header=False), region)
        os.utime(full, (now_mtime, now_mtime))
        stats["rewritten_bytes"] += region
    for i, (path, size) in enumerate(mp["new_media"]):
        generate_file(root, (path, "media", size, subseed(seed, "mutate-new", path), now_mtime + i))
        stats["new_bytes"] += size
    for path in mp["small_rewrites"]:
        e = entries[path]
        rng = random.Random(subseed(seed, "mutate-small", path))
        size = e[2] + rng.randint(-512, 4096)
        generate_file(root, (path, e[1], max(size, 512), subseed(seed, "mutate-small", path), now_mtime))
        stats["small_rewritten_bytes"] += max(size, 512)
    for path in mp["deletes"]:
        os.remove(os.path.join(root, path))
        stats["deleted_bytes"] += entries[path][2]
    for path in mp["touches"]:
        os.utime(os.path.join(root, path), (now_mtime, now_mtime))
    stats["deleted_files"] = len(mp["deletes"])
    stats["touched_files"] = len(mp["touches"])
    stats["new_files"] = len(mp["new_media"])
    stats["appended_files"] = len(mp["appends"])
    stats["rewritten_files"] = len(mp["rewrites"]) + len(mp["small_rewrites"])
    stats["changed_bytes"] = (stats["appended_bytes"] + stats["rewritten_bytes"] + stats["new_bytes"]
                              + stats["small_rewritten_bytes"])
    return stats


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def read_stamp(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_stamp(path, stamp):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stamp, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def ensure_base(root, seed, plan, force_paths, touched_paths, jobs, log):
    """Make the tree at root exactly the base data set; return #files (re)generated.

    force_paths are re-created even if size and mtime look right; files in
    touched_paths only had their mtime changed, so resetting it is enough.
    """
    expected = {e[0]: e for e in plan}
    # Delete files that are not part of the plan (e.g. new media, temp files).
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel not in expected:
                os.remove(full)
        if dirpath != root and not os.listdir(dirpath):
            os.rmdir(dirpath)
    todo = []
    for e in plan:
        path, _, size, _, mtime = e
        full = os.path.join(root, path)
        try:
            st = os.stat(full)
            ok = st.st_size == size and path not in force_paths
            if ok and int(st.st_mtime) != mtime:
                if path in touched_paths:
                    os.utime(full, (mtime, mtime))
                else:
                    ok = False
        except FileNotFoundError:
            ok = False
        if not ok:
            todo.append(e)
    if todo:
        nbytes = sum(e[2] for e in todo)
        log("generating %d files, %.1f MiB, with %d processes" % (len(todo), nbytes / MiB, jobs))
        todo.sort(key=lambda e: -e[2])
        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=jobs) as ex:
                for _ in ex.map(generate_file, [root] * len(todo), todo, chunksize=1):
                    pass
        else:
            for e in todo:
                generate_file(root, e)
    return len(todo)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="data directory (created); stamp is OUT.stamp.json")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--mutate", action="store_true", help="apply the ~5%% deterministic change set")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--summary", help="write a JSON summary (sizes, mutation stats) to this file")
    args = ap.parse_args()
    if args.size_mib < 16:
        ap.error("--size-mib must be at least 16")

    def log(msg):
        print("gen-data: " + msg, file=sys.stderr, flush=True)

    root = os.path.abspath(args.out)
    stamp_path = root.rstrip("/") + ".stamp.json"
    want = {"seed": args.seed, "size_mib": args.size_mib, "gen_version": GEN_VERSION,
            "python": "%d.%d" % sys.version_info[:2]}
    t0 = time.time()
    plan = make_plan(args.seed, args.size_mib)
    stamp = read_stamp(stamp_path)
    same = stamp is not None and all(stamp.get(k) == v for k, v in want.items()) and os.path.isdir(root)
    force = set()
    touched = set()
    if not same:
        if os.path.exists(root):
            log("stamp missing or different (seed/size/version); wiping %s" % root)
            shutil.rmtree(root)
        os.makedirs(root)
    elif stamp.get("state") != "base":
        # Mutated (or interrupted while mutating/generating): re-create the touched files.
        mp = mutation_plan(args.seed, plan)
        force = set(a[0] for a in mp["appends"]) | set(r[0] for r in mp["rewrites"]) | \
            set(mp["small_rewrites"]) | set(mp["deletes"])
        touched = set(mp["touches"]) if stamp.get("state") == "mutated" else set()
        log("data set is in state %r; reverting to base" % stamp.get("state"))
    write_stamp(stamp_path, dict(want, state="generating"))
    n = ensure_base(root, args.seed, plan, force, touched, max(1, args.jobs), log)
    write_stamp(stamp_path, dict(want, state="base"))
    total = sum(e[2] for e in plan)
    summary = {"seed": args.seed, "size_mib": args.size_mib, "base_files": len(plan), "base_bytes": total,
               "regenerated_files": n,
               "bytes_by_kind": {k: sum(e[2] for e in plan if e[1] == k)
                                 for k in sorted(set(e[1] for e in plan))}}
    if n == 0:
        log("base data set already present (seed %d, %d MiB, %d files); nothing generated"
            % (args.seed, args.size_mib, len(plan)))
    if args.mutate:
        write_stamp(stamp_path, dict(want, state="mutating"))
        mp = mutation_plan(args.seed, plan)
        stats = apply_mutation(root, args.seed, plan, mp)
        write_stamp(stamp_path, dict(want, state="mutated"))
        summary["mutation"] = stats
        log("mutated: %.1f MiB changed (%.2f %% of base): %d appends, %d rewrites, %d new, %d deleted, "
            "%d touched" % (stats["changed_bytes"] / MiB, 100.0 * stats["changed_bytes"] / total,
                            stats["appended_files"], stats["rewritten_files"], stats["new_files"],
                            stats["deleted_files"], stats["touched_files"]))
    summary["seconds"] = round(time.time() - t0, 2)
    log("done in %.1f s" % summary["seconds"])
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
