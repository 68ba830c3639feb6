"""No traceback from any input (issue 12): seeded mutations of valid records in every format
pydamon reads (its binary record: finalized columns, compressed blocks, a streamed file; damo's
json and json_compressed) and of scheme files in every form (text, JSON, YAML), run through the
CLI's entry point ``pydamon.cli.main.main`` in a worker process (tests/fuzz_worker.py) with a
memory limit and a time limit per case.

Mutations: bit flips, truncations, byte insertions, and field-value swaps (a JSON value or
text token replaced by another or by an odd one; in pydamon's binary records, integers written
into a header, block or column with every checksum made valid again, so that the reader's
checks of counts and types are what is tested, not only its checksums).

``PYDAMON_FUZZ_CASES`` (default 160, a few seconds) and ``PYDAMON_FUZZ_SEED`` run more or other
cases, e.g. ``PYDAMON_FUZZ_CASES=5000 pytest tests/test_fuzz_inputs.py``.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydamon.record import RecordWriter, export_record, write_record
from test_record_format import make_record

NR_CASES = int(os.environ.get("PYDAMON_FUZZ_CASES", "160"))
SEED = int(os.environ.get("PYDAMON_FUZZ_SEED", "12"))
TIME_LIMIT_S = 20.0  # per case; the cases take ~30 ms (reports) to ~100 ms (schemes)

SCHEME_TEXT = "# cold pages out\nmin max 0% 0% 2s max pageout\n4K 1G 50% 100% 0 5s hugepage\n"
ODD_VALUES: list[Any] = [
    0, -1, 1, 2**31, 2**63, 2**64 + 1, 2**70, 1e308, -1e308, "1e999", "nan", "inf", "-5", "",
    "max", "min", None, True, [], {}, [1, 2], {"min": 1}, "0x7fffffffffff", "4 KiB", "1 s",
    "100%", "a" * 300,
]  # fmt: skip
ODD_INTS = [0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**40, 2**63 - 1, 2**64 - 1]


# -- valid inputs ----------------------------------------------------------------------------------
def valid_inputs(d: Path) -> dict[str, bytes]:
    rec = make_record(8)
    out: dict[str, bytes] = {}
    write_record(str(d / "v2.data"), rec)
    write_record(str(d / "v1z.data"), rec, compress=6)
    w = RecordWriter(str(d / "stream.data"), {"targets": [{"index": 0, "pid": 1}]})
    for i in range(rec.nr_snapshots):
        w.add(rec.slice(i, i + 1))
    w.close(consolidate=False)
    export_record(rec, str(d / "damo.json"), "json")
    export_record(rec, str(d / "damo.jsonz"), "json_compressed")
    for name in ("v2.data", "v1z.data", "stream.data", "damo.json", "damo.jsonz"):
        out[name] = (d / name).read_bytes()
    from pydamon.damos import parse_schemes
    from pydamon.damos.parse import dump_schemes

    schemes = parse_schemes(SCHEME_TEXT, "text", "s.txt")
    out["s.txt"] = SCHEME_TEXT.encode()
    out["s.json"] = dump_schemes(schemes, "json").encode()
    out["s.yaml"] = dump_schemes(schemes, "yaml").encode()
    return out


# -- mutations -------------------------------------------------------------------------------------
def bit_flips(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def truncation(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def insertion(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[at:]


def text_insertion(data: bytes, rng: random.Random) -> bytes:
    """Printable characters (text stays UTF-8, so the parser, not the decoder, is tested)."""
    at = rng.randrange(len(data) + 1)
    chars = "0123456789 %.:-_,{}[]\"'\n\tKMGsmhxabcdefmaxmin"
    extra = "".join(rng.choice(chars) for _ in range(rng.randint(1, 8))).encode()
    return data[:at] + extra + data[at:]


def _swap_json_value(obj: Any, rng: random.Random) -> Any:
    """``obj`` with one value (anywhere in it) replaced by another of it or an odd one."""
    leaves: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in list(items):
            leaves.append((node, k))
            if isinstance(v, dict | list):
                walk(v)

    if not isinstance(obj, dict | list) or not obj:
        return rng.choice(ODD_VALUES)
    walk(obj)
    node, key = rng.choice(leaves)
    if rng.random() < 0.5:
        other, okey = rng.choice(leaves)
        node[key] = json.loads(json.dumps(other[okey]))
    else:
        node[key] = rng.choice(ODD_VALUES)
    if rng.random() < 0.2 and isinstance(node, dict):
        node[rng.choice(["acess_pattern", "snapshotz", "regions", "end_time", "x"])] = 1
    return obj


def json_swap(data: bytes, rng: random.Random, compressed: bool = False) -> bytes:
    text = zlib.decompress(data) if compressed else data
    obj = json.loads(text)
    for _ in range(rng.randint(1, 3)):
        obj = _swap_json_value(obj, rng)
    out = json.dumps(obj).encode()
    return zlib.compress(out) if compressed else out


def token_swap(data: bytes, rng: random.Random) -> bytes:
    """Text and YAML: a token replaced by another token or an odd value."""
    lines = data.decode().split("\n")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        words = lines[i].split(" ")
        filled = [k for k, w in enumerate(words) if w]  # not the indentation
        if not filled:
            continue
        j = rng.choice(filled)
        pool = [w for line in lines for w in line.split(" ") if w]
        odd = [str(v) for v in ODD_VALUES if not isinstance(v, dict | list)]
        words[j] = rng.choice(pool) if rng.random() < 0.5 else rng.choice(odd)
        lines[i] = " ".join(words)
    return "\n".join(lines).encode()


def binary_swap(data: bytes, rng: random.Random) -> bytes:
    """pydamon binary: a header field swapped, or an integer written into a chunk's payload,
    then every checksum recomputed (the reader must check what it trusts)."""
    magic_len = 8
    (meta_len,) = struct.unpack_from("<I", data, magic_len + 4)
    head_end = magic_len + 12 + meta_len
    if rng.random() < 0.35:
        meta = _swap_json_value(json.loads(data[magic_len + 12 : head_end]), rng)
        raw = json.dumps(meta).encode()
        head = data[: magic_len + 4] + struct.pack("<II", len(raw), zlib.crc32(raw)) + raw
        return head + data[head_end:]
    chunks = []
    pos = head_end
    while pos + 12 <= len(data):
        tag, length, _crc = struct.unpack_from("<4sII", data, pos)
        chunks.append((tag, pos, length))
        pos += 12 + length
    b = bytearray(data)
    tag, pos, length = rng.choice(chunks)
    width = rng.choice([1, 2, 4, 8])
    at = pos + 12 + rng.randrange(max(min(length, 96) - width, 1))
    value = rng.choice(ODD_INTS) & ((1 << (8 * width)) - 1)
    b[at : at + width] = value.to_bytes(width, "little")
    _fix_checksums(b, head_end)
    return bytes(b)


def _fix_checksums(b: bytearray, first_chunk: int) -> None:
    pos = first_chunk
    while pos + 12 <= len(b):
        tag, length, _crc = struct.unpack_from("<4sII", b, pos)
        body = pos + 12
        if body + length > len(b):
            return
        covered = length
        if tag == b"COL2" and length >= 24:
            _cid, dtype, _sh, _r, count, seg, data_off = struct.unpack_from("<BBBBQII", b, body)
            covered = min(max(data_off, 24), length)
            widths = [1, 2, 4, 8, 1, 2, 4, 8]
            if dtype < 8 and seg > 0:
                nbytes = min(count * widths[dtype], length - covered)
                for k in range(-(-nbytes // seg)):
                    crc_at = body + 24 + 4 * k
                    if crc_at + 4 > body + covered:
                        break
                    lo = body + data_off + k * seg
                    seg_crc = zlib.crc32(b[lo : min(lo + seg, body + data_off + nbytes)])
                    struct.pack_into("<I", b, crc_at, seg_crc)
        struct.pack_into("<I", b, pos + 8, zlib.crc32(b[body : body + covered]))
        pos = body + length


def mutations_for(name: str) -> list[tuple[str, Callable[[bytes, random.Random], bytes]]]:
    common = [("bit flips", bit_flips), ("truncation", truncation), ("insertion", insertion)]
    if name.endswith(".data"):
        return [*common, ("field swap", binary_swap), ("field swap", binary_swap)]
    if name == "damo.json" or name == "s.json":
        return [*common, ("field swap", json_swap), ("field swap", json_swap)]
    if name == "damo.jsonz":
        swap = ("field swap", lambda d, r: json_swap(d, r, compressed=True))
        return [*common, swap, swap]
    text = [("bit flips", bit_flips), ("truncation", truncation), ("insertion", text_insertion)]
    return [*text, ("token swap", token_swap), ("token swap", token_swap)]


def commands_for(name: str, path: str, out: str) -> list[list[str]]:
    if name.startswith("s."):
        return [["schemes", "--sim", "hotcold", "--sim_size", "64M", "--schemes", path,
                 "--timeout", "0.3", "-q", "--json"]]  # fmt: skip
    return [
        ["report", "info", "-i", path],
        ["report", "raw", "-i", path],
        ["report", "wss", "-i", path],
        ["report", "heatmap", "-i", path, "--output", "raw", "--resol", "8", "16"],
        ["report", "access", "-i", path, "--json"],
        ["convert", path, "-o", out, "--output_type", "json"],
        ["convert", path, "-o", out + ".data", "--output_type", "pydamon"],
    ]


def make_cases(d: Path, nr: int, seed: int) -> list[dict[str, Any]]:
    inputs = valid_inputs(d)
    names = sorted(inputs)
    cases = []
    for i in range(nr):
        rng = random.Random(f"{seed}-{i}")
        name = names[i % len(names)]
        what, mutate = rng.choice(mutations_for(name))
        data = inputs[name]
        for _ in range(rng.choice([1, 1, 1, 2])):
            data = mutate(data, rng) if data else data
        path = d / f"case{i}-{name}"
        path.write_bytes(data)
        argv = rng.choice(commands_for(name, str(path), str(d / f"out{i}")))
        cases.append({"case": i, "input": name, "mutation": what, "argv": argv})
    return cases


def test_no_traceback_hang_or_unbounded_memory_from_any_input(tmp_path):
    cases = make_cases(tmp_path, NR_CASES, SEED)
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps({"cases": cases, "time_limit": TIME_LIMIT_S}))
    worker = Path(__file__).with_name("fuzz_worker.py")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYDAMON_RUN_DIR=str(tmp_path / "run"))
    proc = subprocess.run(
        [sys.executable, str(worker), str(spec)],
        capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=60 + NR_CASES * TIME_LIMIT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and "exit_codes" in lines[-1], proc.stdout[-2000:]
    exit_codes = lines[-1]["exit_codes"]
    problems = lines[:-1]
    shown = "\n\n".join(
        f"case {p['case']} ({p['input']}, {p['mutation']}; PYDAMON_FUZZ_SEED={SEED}): "
        f"pydamon {' '.join(p['argv'])}\n{p['problem']}"
        for p in problems[:5]
    )
    assert not problems, f"{len(problems)} of {len(cases)} cases went wrong:\n{shown}"
    # every case ran; many mutations leave a readable input (damage skipped), many do not
    assert sum(exit_codes.values()) == NR_CASES
    refused = exit_codes.get("1", 0) + exit_codes.get("2", 0)
    assert exit_codes.get("0", 0) > NR_CASES // 10 and refused > NR_CASES // 10, exit_codes
