#!/usr/bin/env python3
"""Writes the starting corpus of the fuzz targets into fuzz/corpus/<target>/ (not committed;
the minimized corpus is, in tests/fuzz-corpus/). See docs/fuzzing.md.

Seeds: every example of schemas/examples/ (valid and invalid), CloudEvents shaped like the
ones collectors send, and a few hostile shapes (deep nesting, huge numbers, leap seconds,
offsets at the edge of the calendar, invalid UTF-8). For decode_request each body is
prefixed with its two header bytes: [content type index, flags] (fuzz/src/harness.rs).
"""
import gzip
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"

# Indexes into harness::CONTENT_TYPES.
NONE, JSON, NDJSON, CE, CE_BATCH, JSON_PARAMS, JSONL, TEXT_PLAIN = 0, 1, 2, 3, 4, 5, 6, 10
# harness flags: bits 0-2 encoding (2 = gzip), bit 3 gzip here, bits 4-5 limit, 6 truncate,
# 7 trailing garbage.
PLAIN, GZIP_HERE, GZIP_TRUNCATED, TINY_LIMIT = 0x00, 0x0A, 0x4A, 0x30


def examples():
    for path in sorted((ROOT / "schemas" / "examples").rglob("*.json")):
        if path.name == "expected.json":
            continue
        yield path.stem, json.loads(path.read_text())


def cloudevents():
    yield "ce-build", {
        "specversion": "1.0", "type": "dev.shiplog.build.v1", "source": "vite-plugin",
        "id": "b7f3", "time": "2026-11-21T10:02:13.482Z",
        "datacontenttype": "application/json", "project": "web-app", "env": "production",
        "traceparent": "00-4bf9-01",
        "data": {"tool": "vite", "success": True, "duration_ms": 48213,
                 "phases": [{"name": "transform", "duration_ms": 39870}]},
    }
    yield "ce-deploy-subject", {
        "specversion": "1.0", "type": "deploy", "source": "ci/github", "id": "run-1",
        "subject": "dpl_8fJ2",
        "data": {"project": "web-app", "env": "production", "status": "succeeded"},
    }
    yield "ce-check-deploymentid", {
        "specversion": "1.0", "type": "check", "source": "probe", "id": "c1",
        "project": "web-app", "deploymentid": "dpl_2", "deployment_id": "dpl_2",
        "subject": "error_rate", "data": {"name": "error_rate", "value": 0.02},
    }
    yield "ce-conflict", {
        "specversion": "1.0", "type": "api_cost", "source": "worker", "id": "x",
        "project": "a", "data": {"project": "b", "provider": "openai", "model": "m"},
    }
    yield "ce-base64", {
        "specversion": "1.0", "type": "build", "source": "s", "id": "x", "project": "p",
        "data_base64": "e30=",
    }


def hostile():
    deep = "[" * 200 + "]" * 200
    yield "deep-array-in-data", (
        '{"id":"d","kind":"check","source":"s","project":"p","data":{"name":"n","x":'
        + deep + "}}").encode()
    yield "deep-object", ('{"a":' * 150 + "1" + "}" * 150).encode()
    yield "huge-numbers", (
        b'{"id":"n","kind":"build","source":"s","project":"p","data":{"success":true,'
        b'"duration_ms":9007199254740991.0,"bundle_bytes":1e308,"x":-0,"y":-0.0,'
        b'"z":18446744073709551616,"w":1.0e-400}}')
    yield "leap-second", (
        b'{"id":"l","kind":"check","source":"s","project":"p",'
        b'"time":"2016-12-31T23:59:60.999999999Z","data":{"name":"n"}}')
    yield "leap-second-offset", (
        b'{"id":"l","kind":"check","source":"s","project":"p",'
        b'"time":"2017-01-01T00:59:60+01:00","data":{"name":"n"}}')
    yield "edge-of-calendar", (
        b'{"id":"e","kind":"check","source":"s","project":"p",'
        b'"time":"0000-01-01T00:00:00+00:01","received_at":"9999-12-31T23:59:59-23:59",'
        b'"data":{"name":"n"}}')
    yield "invalid-utf8", (
        b'{"id":"\xff\xfe","kind":"check","source":"s","project":"p","data":{"name":"n"}}')
    yield "escaped-surrogates", (
        b'{"id":"\\ud83d\\ude00","kind":"check","source":"\\ud800","project":"p",'
        b'"data":{"name":"n"}}')
    yield "duplicate-keys", (
        b'{"id":"a","id":"b","kind":"build","kind":"check","source":"s","project":"p",'
        b'"data":{"name":"n","name":1}}')
    yield "decision", (
        b'{"id":"x","kind":"decision","source":"shiplog","project":"p",'
        b'"data":{"rule":"r","verdict":"healthy","samples":3.0}}')


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}-{hashlib.sha1(data).hexdigest()[:8]}").write_bytes(data)


def main():
    events = [(n, json.dumps(v, separators=(",", ":")).encode()) for n, v in examples()]
    ces = [(n, json.dumps(v, separators=(",", ":")).encode()) for n, v in cloudevents()]
    raw = list(hostile())
    for name, body in events + ces + raw:
        write("event_from_json", name, body)
    for name, body in events + raw:
        write("decode_request", f"{name}-json", bytes([JSON, PLAIN]) + body)
        write("decode_request", f"{name}-array", bytes([NONE, PLAIN]) + b"[" + body + b"," + body + b"]")
    for name, body in events[:6]:
        write("decode_request", f"{name}-gzip-here", bytes([JSON_PARAMS, GZIP_HERE]) + body)
        write("decode_request", f"{name}-gzip-sent", bytes([JSON, 0x02]) + gzip.compress(body))
        write("decode_request", f"{name}-gzip-cut", bytes([JSON, GZIP_TRUNCATED]) + body)
        write("decode_request", f"{name}-tiny-limit", bytes([JSON, TINY_LIMIT]) + body)
        write("decode_request", f"{name}-text-plain", bytes([TEXT_PLAIN, PLAIN]) + body)
    nd = b"\n".join(b for _, b in events[:8]) + b"\n\r\nnot json\n" + raw[-3][1] + b"\n"
    write("decode_request", "ndjson", bytes([NDJSON, PLAIN]) + nd)
    write("decode_request", "jsonl-gzip", bytes([JSONL, GZIP_HERE]) + nd)
    for name, body in ces:
        write("decode_request", f"{name}-structured", bytes([CE, PLAIN]) + body)
        write("decode_request", f"{name}-batch", bytes([CE_BATCH, PLAIN]) + b"[" + body + b"]")
    bomb = gzip.compress(b" " * (2 << 20), 9)
    write("decode_request", "gzip-bomb", bytes([JSON, 0x02]) + bomb)


if __name__ == "__main__":
    main()
