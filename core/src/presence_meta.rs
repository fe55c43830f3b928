//! Typed presence meta (SPEC §3, WS-295): the fields of a presence `meta` the server reads
//! — `activity`, `location`, `battery` and `device_id` — and the one check both doors (`/ws`
//! `presence`, the realtime-js door's `track`) apply before a meta reaches the owner. Any
//! other field is the app's own and passes as it is.
//!
//! It does not decide what a low battery means (that is the watchdog, `io/src/runtime`).

use crate::error::{ErrorCode, Refusal};
use serde_json::{Map, Value};

/// `activity`: what a vendor is doing.
pub const ACTIVITIES: &[&str] = &[
    "en_route",
    "at_venue",
    "setup",
    "photography",
    "ceremony",
    "reception",
    "breakdown",
];

/// `location`: the documented places. An app may add its own as `x-<word>` (see
/// [`APP_LOCATION_PREFIX`]).
pub const LOCATIONS: &[&str] = &[
    "parking",
    "bridal_suite",
    "groom_suite",
    "ceremony_area",
    "cocktail_area",
    "reception_hall",
    "kitchen",
    "photo_location",
    "off_site",
];

/// App-defined locations start with this, followed by 1 to [`APP_LOCATION_MAX_BYTES`]
/// bytes of `a-z`, `0-9` and `_`.
pub const APP_LOCATION_PREFIX: &str = "x-";
pub const APP_LOCATION_MAX_BYTES: usize = 32;
/// Longest `device_id`.
pub const DEVICE_ID_MAX_BYTES: usize = 128;

/// The typed fields of one meta, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypedMeta {
    pub activity: Option<String>,
    pub location: Option<String>,
    /// Percent, 0 to 100.
    pub battery: Option<u8>,
    pub device_id: Option<String>,
}

fn bad(msg: String) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, msg)
}

fn is_app_location(s: &str) -> bool {
    s.strip_prefix(APP_LOCATION_PREFIX).is_some_and(|w| {
        !w.is_empty()
            && w.len() <= APP_LOCATION_MAX_BYTES
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// Checks the typed fields of a meta object (`WS_BAD_REQUEST`, naming the field) and
/// returns them. `null` for a typed field is the same as leaving it out.
pub fn check(meta: &Map<String, Value>) -> Result<TypedMeta, Refusal> {
    let mut t = TypedMeta::default();
    let text = |k: &str| -> Result<Option<&str>, Refusal> {
        match meta.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(format!("presence meta `{k}` must be a string"))),
        }
    };
    if let Some(a) = text("activity")? {
        if !ACTIVITIES.contains(&a) {
            return Err(bad(format!(
                "presence meta `activity` {:?} is not one of {}",
                a.escape_default().to_string(),
                ACTIVITIES.join(", ")
            )));
        }
        t.activity = Some(a.to_owned());
    }
    if let Some(l) = text("location")? {
        if !LOCATIONS.contains(&l) && !is_app_location(l) {
            return Err(bad(format!(
                "presence meta `location` {:?} is not one of {} nor an app-defined x-<word> (a-z, 0-9, _)",
                l.escape_default().to_string(),
                LOCATIONS.join(", ")
            )));
        }
        t.location = Some(l.to_owned());
    }
    match meta.get("battery") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|b| b <= 100) => {
            t.battery = n.as_u64().map(|b| b as u8);
        }
        Some(_) => {
            return Err(bad(
                "presence meta `battery` must be an integer percentage from 0 to 100".into(),
            ))
        }
    }
    if let Some(d) = text("device_id")? {
        if d.is_empty() || d.len() > DEVICE_ID_MAX_BYTES || d.chars().any(char::is_control) {
            return Err(bad(format!(
                "presence meta `device_id` must be 1 to {DEVICE_ID_MAX_BYTES} bytes without control characters"
            )));
        }
        t.device_id = Some(d.to_owned());
    }
    Ok(t)
}

/// [`check`] on a meta given as JSON text (a JSON object; anything else is refused).
pub fn check_json(meta: &str) -> Result<TypedMeta, Refusal> {
    let m: Map<String, Value> = serde_json::from_str(meta)
        .map_err(|_| bad("presence `meta` must be a JSON object".into()))?;
    check(&m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn on(v: Value) -> Result<TypedMeta, Refusal> {
        check(v.as_object().unwrap())
    }

    #[test]
    fn typed_fields_are_read_and_the_rest_passes() {
        let t = on(
            json!({"activity": "setup", "location": "bridal_suite", "battery": 15,
            "device_id": "phone-1", "mood": "calm"}),
        )
        .unwrap();
        assert_eq!(t.activity.as_deref(), Some("setup"));
        assert_eq!(t.location.as_deref(), Some("bridal_suite"));
        assert_eq!(t.battery, Some(15));
        assert_eq!(t.device_id.as_deref(), Some("phone-1"));
        assert_eq!(on(json!({})).unwrap(), TypedMeta::default());
        assert_eq!(on(json!({"battery": null})).unwrap(), TypedMeta::default());
        assert!(on(json!({"location": "x-marquee_2"})).is_ok());
        assert!(on(json!({"battery": 0})).is_ok());
        assert!(on(json!({"battery": 100})).is_ok());
    }

    #[test]
    fn bad_typed_values_are_bad_requests_naming_the_field() {
        for (v, field) in [
            (json!({"activity": "napping"}), "activity"),
            (json!({"activity": 3}), "activity"),
            (json!({"location": "moon"}), "location"),
            (json!({"location": "x-"}), "location"),
            (json!({"location": "x-Big Tent"}), "location"),
            (json!({"battery": 101}), "battery"),
            (json!({"battery": -1}), "battery"),
            (json!({"battery": 5.5}), "battery"),
            (json!({"battery": "5"}), "battery"),
            (json!({"device_id": ""}), "device_id"),
        ] {
            let e = on(v).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains(field), "{field}: {}", e.message);
        }
        assert_eq!(check_json("[1]").unwrap_err().code, ErrorCode::BadRequest);
    }
}
