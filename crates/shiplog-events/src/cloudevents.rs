//! CloudEvents 1.0, JSON structured mode (one object) and batch mode (an array), mapped onto
//! the shiplog envelope.
//!
//! | CloudEvent | shiplog |
//! |---|---|
//! | `specversion` | must be `"1.0"`; dropped |
//! | `type` | `kind`: `build` or `dev.shiplog.build.v1` |
//! | `id`, `source`, `time` | the same envelope fields |
//! | `project`, `env`, `commit`, `branch`, `deployment_id` (also `deploymentid`) | extension attributes of that name, or the same field inside `data` (then removed from `data`) |
//! | `subject` | `deployment_id`, when that is not given otherwise; else kept in `extra` |
//! | `datacontenttype` | must be JSON when present (`application/json`, `text/json`, `application/*+json`); kept in `extra` |
//! | `data` | `data` (a JSON object); `data_base64` is refused |
//! | any other attribute | `extra`, as sent |
//!
//! A field given twice (as an extension attribute and inside `data`, or as `deployment_id`
//! and `deploymentid`) must have the same value both times. Error pointers refer to the
//! CloudEvent as sent: an invalid `type` is `/type`, a project sent inside `data` is
//! `/data/project`, a `deployment_id` taken from `subject` is `/subject`.
use crate::{validate::type_name, Kind};
use crate::{Event, FieldError, Origin};
use serde_json::{Map, Value};

/// The only CloudEvents `specversion` accepted.
pub const CLOUDEVENTS_SPECVERSION: &str = "1.0";

/// shiplog envelope fields carried as CloudEvents extension attributes or inside `data`,
/// with the extension-attribute spellings accepted for each.
const CARRIED: &[(&str, &[&str])] = &[
    ("project", &["project"]),
    ("env", &["env"]),
    ("commit", &["commit"]),
    ("branch", &["branch"]),
    ("deployment_id", &["deployment_id", "deploymentid"]),
];

/// Maps one CloudEvent (structured mode JSON) onto a shiplog event, as a collector
/// ([`Origin::Collector`]: `decision` is refused).
pub fn from_cloudevent(value: Value) -> Result<Event, FieldError> {
    let Value::Object(mut ce) = value else {
        return Err(FieldError::new("", "a CloudEvent must be a JSON object"));
    };
    match ce.shift_remove("specversion") {
        None | Some(Value::Null) => {
            return Err(FieldError::new("/specversion", "is required (\"1.0\")"))
        }
        Some(Value::String(s)) if s == CLOUDEVENTS_SPECVERSION => {}
        Some(v) => {
            return Err(FieldError::new(
                "/specversion",
                format!("must be \"{CLOUDEVENTS_SPECVERSION}\", got {v}"),
            ))
        }
    }
    let kind = match ce.shift_remove("type") {
        None | Some(Value::Null) => return Err(FieldError::new("/type", "is required")),
        Some(Value::String(s)) => Kind::parse(&s).ok_or_else(|| {
            FieldError::new(
                "/type",
                format!(
                    "unknown event type {s:?}; expected a kind (build, deploy, migration, \
                     api_cost, check) or dev.shiplog.<kind>.v1"
                ),
            )
        })?,
        Some(v) => {
            return Err(FieldError::new(
                "/type",
                format!("must be a string, got {}", type_name(&v)),
            ))
        }
    };
    match ce.get("datacontenttype") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if is_json_media_type(s) => {}
        Some(v) => {
            return Err(FieldError::new(
                "/datacontenttype",
                format!("must be a JSON media type such as application/json, got {v}"),
            ))
        }
    }
    if ce.contains_key("data_base64") {
        return Err(FieldError::new(
            "/data_base64",
            "binary data is not supported: send `data` as a JSON object",
        ));
    }
    if ce.contains_key("kind") {
        return Err(FieldError::new(
            "/kind",
            "is not accepted in a CloudEvent: `type` names the kind",
        ));
    }
    let mut data = match ce.shift_remove("data") {
        None | Some(Value::Null) => return Err(FieldError::new("/data", "is required")),
        Some(Value::Object(m)) => m,
        Some(v) => {
            return Err(FieldError::new(
                "/data",
                format!("must be a JSON object, got {}", type_name(&v)),
            ))
        }
    };

    let mut event = Map::with_capacity(ce.len() + 4);
    for key in ["id", "source", "time"] {
        if let Some(v) = ce.shift_remove(key) {
            event.insert(key.to_string(), v);
        }
    }
    event.insert("kind".to_string(), Value::String(kind.as_str().to_string()));
    // Where each carried envelope field came from, for error pointers.
    let mut came_from: [Option<String>; 5] = Default::default();
    for (slot, (field, ext_names)) in CARRIED.iter().enumerate() {
        let mut found: Option<(Value, String)> = None;
        let candidates = ext_names
            .iter()
            .map(|n| (ce.shift_remove(*n), format!("/{n}")))
            .chain(std::iter::once((
                data.shift_remove(*field),
                format!("/data/{field}"),
            )));
        for (v, pointer) in candidates {
            let Some(v) = v.filter(|v| !v.is_null()) else {
                continue;
            };
            match &found {
                None => found = Some((v, pointer)),
                Some((first, first_pointer)) if *first != v => {
                    return Err(FieldError::new(
                        pointer,
                        format!("conflicts with {first_pointer} ({first} vs {v})"),
                    ))
                }
                Some(_) => {}
            }
        }
        if found.is_none() && *field == "deployment_id" {
            if let Some(v) = ce.shift_remove("subject").filter(|v| !v.is_null()) {
                found = Some((v, "/subject".to_string()));
            }
        }
        if let Some((v, pointer)) = found {
            event.insert(field.to_string(), v);
            came_from[slot] = Some(pointer);
        }
    }
    event.insert("data".to_string(), Value::Object(data));
    // Everything left (subject when not used, datacontenttype, dataschema, extensions).
    for (k, v) in ce {
        event.entry(k).or_insert(v);
    }

    Event::from_json(Value::Object(event), Origin::Collector).map_err(|mut e| {
        if e.field == "/kind" {
            e.field = "/type".to_string();
        } else if let Some(slot) = CARRIED
            .iter()
            .position(|(f, _)| e.field.strip_prefix('/') == Some(*f))
        {
            if let Some(pointer) = came_from[slot].take() {
                e.field = pointer;
            }
        }
        e
    })
}

/// Maps a CloudEvents batch (a JSON array of structured-mode events): one result per
/// element, in order; error pointers are relative to that element. A value that is not an
/// array gives a single error with pointer `""`.
pub fn from_cloudevents_batch(value: Value) -> Vec<Result<Event, FieldError>> {
    match value {
        Value::Array(items) => items.into_iter().map(from_cloudevent).collect(),
        _ => vec![Err(FieldError::new(
            "",
            "a CloudEvents batch must be a JSON array",
        ))],
    }
}

/// `application/json`, `text/json` or `application/<anything>+json`, with optional
/// parameters (`; charset=utf-8`), case-insensitive.
fn is_json_media_type(s: &str) -> bool {
    let essence = s.split(';').next().unwrap_or("").trim();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    let sub_json = sub.eq_ignore_ascii_case("json");
    (top.eq_ignore_ascii_case("application") || top.eq_ignore_ascii_case("text")) && sub_json
        || top.eq_ignore_ascii_case("application")
            && sub.len() > 5
            && sub.as_bytes()[sub.len() - 5..].eq_ignore_ascii_case(b"+json")
}

#[cfg(test)]
mod tests {
    use super::is_json_media_type;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/json",
            "application/cloudevents+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/xml",
            "+json",
            "application/+json",
            "json",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
