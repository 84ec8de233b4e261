//! Request decoding for `POST /v1/events`: content type and encoding → events. The HTTP
//! server (`shiplog-web`) reads the headers and the body and answers with the status a
//! [`DecodeError`] names; everything between is here.
//!
//! Pure functions (no I/O) so they can be fuzzed and property-tested: any byte string
//! either decodes into per-event results or is refused with a 4xx status and a reason;
//! nothing here panics.

use flate2::read::MultiGzDecoder;
use serde_json::Value;
use shiplog_events::{from_cloudevent, Event, FieldError, Origin, RawEvent, ValidEvent};
use std::io::Read;

/// The body shapes `POST /v1/events` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one event object or an array of them.
    Json,
    /// `application/x-ndjson`: one event per line.
    NdJson,
    /// `application/cloudevents+json`: one CloudEvent, structured mode.
    CloudEvent,
    /// `application/cloudevents-batch+json`: an array of CloudEvents.
    CloudEventsBatch,
}

/// A whole-request refusal: the status to answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub status: u16,
    pub message: String,
}

impl DecodeError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        DecodeError {
            status,
            message: message.into(),
        }
    }
}

/// The events of a request, in body order: each one valid or rejected with its field.
pub type DecodedEvents = Vec<Result<Event, FieldError>>;

/// The events of a request as the server keeps them: fast-path events borrow the body.
pub type ValidEvents<'a> = Vec<Result<ValidEvent<'a>, FieldError>>;

/// Chooses the body format from the `Content-Type` header (parameters such as
/// `; charset=utf-8` are ignored). A missing header is read as JSON.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, DecodeError> {
    let Some(ct) = content_type else {
        return Ok(BodyFormat::Json);
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "text/json" | "" => Ok(BodyFormat::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Ok(BodyFormat::NdJson),
        "application/cloudevents+json" => Ok(BodyFormat::CloudEvent),
        "application/cloudevents-batch+json" => Ok(BodyFormat::CloudEventsBatch),
        other => Err(DecodeError::new(
            415,
            format!(
                "unsupported content type {other:?}; use application/json, application/x-ndjson, \
                 application/cloudevents+json or application/cloudevents-batch+json"
            ),
        )),
    }
}

/// Undoes `Content-Encoding` (identity or gzip), refusing output larger than `limit`
/// (a zip bomb gets 413, not an out-of-memory).
pub fn decode_content<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    if body.len() > limit {
        return Err(DecodeError::new(
            413,
            format!("body exceeds the limit of {limit} bytes"),
        ));
    }
    let enc = encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => Ok(std::borrow::Cow::Borrowed(body)),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let mut decoder = MultiGzDecoder::new(body).take(limit as u64 + 1);
            decoder
                .read_to_end(&mut out)
                .map_err(|e| DecodeError::new(400, format!("body is not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(DecodeError::new(
                    413,
                    format!("decompressed body exceeds the limit of {limit} bytes"),
                ));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        other => Err(DecodeError::new(
            415,
            format!("unsupported content encoding {other:?}; use gzip or none"),
        )),
    }
}

/// Decodes a (decompressed) body into events, validating each one. Structural errors
/// of the whole body (not JSON at all) are a 400; a bad event is a per-event rejection.
///
/// Each event first goes through the fast path ([`RawEvent::parse`]: no tree, stored as
/// sent); whatever it does not vouch for goes through [`Event::from_json`], which gives the
/// verdict. CloudEvents always take the slow path (they are mapped onto the envelope).
pub fn decode_body(format: BodyFormat, body: &[u8]) -> Result<ValidEvents<'_>, DecodeError> {
    let events = match format {
        BodyFormat::Json => {
            let text = std::str::from_utf8(body).ok();
            match text.map(|t| t.trim_start_matches(|c: char| c.is_ascii_whitespace())) {
                Some(t) if t.starts_with('[') => match shiplog_events::raw::split_array(t) {
                    Some(items) => items
                        .into_iter()
                        .map(|(text, fast)| match fast {
                            Some(ev) => Ok(ValidEvent::Raw(ev)),
                            None => slow_event(text),
                        })
                        .collect(),
                    None => slow_json(body)?,
                },
                Some(t) if t.starts_with('{') => match RawEvent::parse(t) {
                    Some(ev) => vec![Ok(ValidEvent::Raw(ev))],
                    None => slow_json(body)?,
                },
                _ => slow_json(body)?,
            }
        }
        BodyFormat::NdJson => {
            let mut out = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                let line = trim_ascii(line);
                if line.is_empty() {
                    continue;
                }
                out.push(match std::str::from_utf8(line) {
                    Ok(text) => one_event(text),
                    Err(_) => match serde_json::from_slice::<Value>(line) {
                        Ok(value) => to_event(value),
                        Err(e) => Err(FieldError::new("", format!("line is not valid JSON: {e}"))),
                    },
                });
            }
            out
        }
        BodyFormat::CloudEvent => match parse_json(body)? {
            value @ Value::Object(_) => vec![from_cloudevent(value).map(ValidEvent::from)],
            _ => {
                return Err(DecodeError::new(
                    400,
                    "a structured-mode CloudEvent must be a JSON object",
                ))
            }
        },
        BodyFormat::CloudEventsBatch => match parse_json(body)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| from_cloudevent(v).map(ValidEvent::from))
                .collect(),
            _ => {
                return Err(DecodeError::new(
                    400,
                    "a CloudEvents batch must be a JSON array",
                ))
            }
        },
    };
    if events.is_empty() {
        return Err(DecodeError::new(400, "the body holds no events"));
    }
    Ok(events)
}

/// The whole decoding of one request body, with every event materialized as an [`Event`]
/// (tests and fuzzing; the server uses [`decode_content`] and [`decode_body`], which keep
/// fast-path events as the text sent).
pub fn decode_request(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<DecodedEvents, DecodeError> {
    let format = body_format(content_type)?;
    let body = decode_content(content_encoding, body, limit)?;
    Ok(decode_body(format, &body)?
        .into_iter()
        .map(|r| r.map(ValidEvent::into_event))
        .collect())
}

/// One event's JSON text: the fast path, else the slow path's verdict.
fn one_event(text: &str) -> Result<ValidEvent<'_>, FieldError> {
    match RawEvent::parse(text) {
        Some(ev) => Ok(ValidEvent::Raw(ev)),
        None => slow_event(text),
    }
}

/// The slow path's verdict on one event's JSON text.
fn slow_event(text: &str) -> Result<ValidEvent<'static>, FieldError> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => to_event(value),
        Err(e) => Err(FieldError::new("", format!("line is not valid JSON: {e}"))),
    }
}

/// The slow path for a whole JSON body: one object or an array of objects.
fn slow_json(body: &[u8]) -> Result<ValidEvents<'static>, DecodeError> {
    match parse_json(body)? {
        Value::Array(items) => Ok(items.into_iter().map(to_event).collect()),
        value @ Value::Object(_) => Ok(vec![to_event(value)]),
        _ => Err(DecodeError::new(
            400,
            "body must be a JSON object (one event) or an array of events",
        )),
    }
}

fn to_event(value: Value) -> Result<ValidEvent<'static>, FieldError> {
    Event::from_json(value, Origin::Collector).map(ValidEvent::from)
}

fn parse_json(body: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(400, format!("body is not valid JSON: {e}")))
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BUILD: &str = r#"{"id":"b1","kind":"build","source":"vite-plugin","project":"web","data":{"success":true,"duration_ms":1200}}"#;

    #[test]
    fn json_object_array_and_ndjson() {
        let one =
            decode_request(Some("application/json"), None, BUILD.as_bytes(), 1 << 20).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].is_ok());
        let arr = format!("[{BUILD},{BUILD}]");
        assert_eq!(
            decode_request(None, None, arr.as_bytes(), 1 << 20)
                .unwrap()
                .len(),
            2
        );
        let nd = format!("{BUILD}\n\n{BUILD}\r\nnot json\n");
        let events =
            decode_request(Some("application/x-ndjson"), None, nd.as_bytes(), 1 << 20).unwrap();
        assert_eq!(events.len(), 3);
        assert!(events[2].is_err());
    }

    #[test]
    fn gzip_and_limits() {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(BUILD.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let events = decode_request(Some("application/json"), Some("gzip"), &gz, 1 << 20).unwrap();
        assert_eq!(events.len(), 1);
        // A bomb: 10 MB of spaces compresses to a few KB, refused at a 1 MB limit.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&vec![b' '; 10 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 100_000);
        let err =
            decode_request(Some("application/json"), Some("gzip"), &bomb, 1 << 20).unwrap_err();
        assert_eq!(err.status, 413);
        let err =
            decode_request(Some("application/json"), Some("gzip"), b"nope", 1 << 20).unwrap_err();
        assert_eq!(err.status, 400);
        let err = decode_request(Some("application/json"), Some("br"), b"{}", 1 << 20).unwrap_err();
        assert_eq!(err.status, 415);
        let err = decode_request(Some("text/plain"), None, b"{}", 1 << 20).unwrap_err();
        assert_eq!(err.status, 415);
        let err = decode_request(None, None, BUILD.as_bytes(), 10).unwrap_err();
        assert_eq!(err.status, 413);
    }

    #[test]
    fn structural_errors_are_400() {
        for body in [&b""[..], b"[]", b"42", b"\"x\"", b"{", b"\xff\xfe"] {
            let err = decode_request(None, None, body, 1 << 20).unwrap_err();
            assert_eq!(err.status, 400, "{body:?}");
            assert!(!err.message.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Arbitrary bytes under any content type and encoding never panic; a refusal is
        /// always a 4xx with a reason, and every per-event rejection has a reason.
        #[test]
        fn arbitrary_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            ct in prop_oneof![
                Just(None),
                Just(Some("application/json")),
                Just(Some("application/x-ndjson")),
                Just(Some("application/cloudevents+json")),
                Just(Some("application/cloudevents-batch+json")),
                Just(Some("application/xml")),
            ],
            enc in prop_oneof![Just(None), Just(Some("gzip")), Just(Some("deflate"))],
        ) {
            match decode_request(ct, enc, &body, 4096) {
                Ok(events) => {
                    for r in events {
                        if let Err(e) = r { prop_assert!(!e.error.is_empty()); }
                    }
                }
                Err(e) => {
                    prop_assert!((400..500).contains(&e.status));
                    prop_assert!(!e.message.is_empty());
                }
            }
        }

        /// JSON-shaped noise (arrays of objects with random envelope fields) never panics.
        #[test]
        fn json_shaped_noise_never_panics(
            fields in proptest::collection::vec(
                (prop_oneof![Just("id"), Just("kind"), Just("source"), Just("project"),
                             Just("time"), Just("data"), Just("env"), Just("specversion"),
                             Just("type")],
                 prop_oneof![Just("null".to_string()), Just("1".to_string()),
                             Just("\"build\"".to_string()), Just("{}".to_string()),
                             Just("[]".to_string()), Just("\"2026-01-01T00:00:00Z\"".to_string()),
                             "\"[a-z]{0,6}\"".prop_map(|s| s),
                             Just("{\"success\":true,\"duration_ms\":-1}".to_string())]),
                0..8),
            ct in prop_oneof![Just("application/json"), Just("application/cloudevents+json"),
                              Just("application/cloudevents-batch+json")],
        ) {
            let obj = format!("{{{}}}", fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","));
            for body in [obj.clone(), format!("[{obj},{obj}]")] {
                if let Err(e) = decode_request(Some(ct), None, body.as_bytes(), 4096) {
                    prop_assert!((400..500).contains(&e.status));
                }
            }
        }
    }
}
