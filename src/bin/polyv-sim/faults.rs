//! The fault switches and run-time settings a test changes through `/_sim/faults`: what they
//! hold ([`Faults`], shown by `GET /_sim/faults`) and how a posted update is checked and
//! applied ([`FaultsPatch`]).
//!
//! An update is all or nothing: every field is checked before any is applied, and a bad field
//! gives a message that names it. Lines marked (inferred) are choices of this simulator, not
//! Polyv behaviour.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Seconds an issued `auth_key` stays valid: Polyv's addresses expire 1800 s after issue
/// (server time + 1800 in the Java SDK's quick-start log).
pub const DEFAULT_AUTH_KEY_TTL_S: u64 = 1800;
/// Longest `auth_key_ttl_s` accepted (ten years), so expiry arithmetic stays far from overflow.
pub const MAX_AUTH_KEY_TTL_S: u64 = 315_360_000;
/// Polyv's documented limit: 1500 requests per 10 s per IP (polyv-java-sdk docs/live/limit.md).
pub const DEFAULT_RATE_LIMIT_PER_10S: u32 = 1500;
/// Polyv's documented block: 5 minutes.
pub const DEFAULT_RATE_LIMIT_BLOCK_S: u64 = 300;
/// Longest `block_s` accepted (one day).
pub const MAX_RATE_LIMIT_BLOCK_S: u64 = 86_400;
/// Longest login refusal message, in characters.
pub const MAX_REFUSAL_CHARS: usize = 1000;

/// The next `count` teacher_login calls with valid credentials are refused with `message`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoginRefusal {
    pub message: String,
    /// Refusals still to come; 0 once used up (the message stays for `GET /_sim/faults`).
    pub count: u32,
}

/// Polyv's per-IP rate limit on api.polyv.net, and the older always-on switch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RateLimit {
    /// Answer every request `qps exceeds number of calls`, counting or not (the old
    /// `"rate_limit": true`).
    pub always: bool,
    /// More than this many requests from one IP within 10 s blocks it; 0 turns counting off.
    pub per_10s: u32,
    /// How long a block lasts, in seconds (measured on the simulator's clock, so moving the
    /// clock forward ends it).
    pub block_s: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            always: false,
            per_10s: DEFAULT_RATE_LIMIT_PER_10S,
            block_s: DEFAULT_RATE_LIMIT_BLOCK_S,
        }
    }
}

/// Fault switches (all off by default) and the settings a test may change at run time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Faults {
    pub latency_ms: u64,
    pub error500: u32,
    pub error500_always: bool,
    pub garbage: bool,
    pub rate_limit: RateLimit,
    /// The login reply uses the protected form (`bakUrl + stream + suffix`) even without an
    /// auth_key; with an auth_key it always does.
    pub protected: bool,
    pub clock_offset_ms: i64,
    /// Render the `code` of every JSON envelope (v3, v4, push-client errors) as a string.
    pub string_codes: bool,
    pub login_refusal: Option<LoginRefusal>,
    /// TTL of issued auth_keys in seconds; 0 issues none (and on_publish then needs none).
    pub auth_key_ttl_s: u64,
    /// Hosts (lower-case names) that answer 404 to everything.
    pub not_found_hosts: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            error500: 0,
            error500_always: false,
            garbage: false,
            rate_limit: RateLimit::default(),
            protected: false,
            clock_offset_ms: 0,
            string_codes: false,
            login_refusal: None,
            auth_key_ttl_s: DEFAULT_AUTH_KEY_TTL_S,
            not_found_hosts: Vec::new(),
        }
    }
}

/// A partial update of [`Faults`], as posted to `/_sim/faults`. `rate_limit`,
/// `login_refusal` and `not_found_hosts` are checked by hand for clear messages.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub latency_ms: Option<u64>,
    pub error500: Option<u32>,
    pub error500_always: Option<bool>,
    pub garbage: Option<bool>,
    /// `true`/`false` (the always-on switch) or `{always?, per_10s?, block_s?, clear?}`.
    pub rate_limit: Option<Value>,
    pub protected: Option<bool>,
    pub clock_offset_ms: Option<i64>,
    pub string_codes: Option<bool>,
    /// `{message, count?}` (count defaults to 1), or `null` to clear.
    #[serde(default, deserialize_with = "present")]
    pub login_refusal: Option<Value>,
    pub auth_key_ttl_s: Option<u64>,
    pub not_found_hosts: Option<Vec<String>>,
}

/// Keeps an explicit `null` apart from an absent field: absent is `None`, `null` is
/// `Some(Value::Null)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// What applying a patch asks of state outside [`Faults`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Forget every rate-limit count and block (`"rate_limit": {"clear": true}`).
    pub clear_rate_limit: bool,
}

impl Faults {
    /// Checks the whole patch, then applies it; on error nothing changes.
    pub fn apply(&mut self, p: FaultsPatch) -> Result<Effects, String> {
        let mut next = self.clone();
        let mut effects = Effects::default();
        if let Some(v) = p.latency_ms {
            next.latency_ms = v;
        }
        if let Some(v) = p.error500 {
            next.error500 = v;
        }
        if let Some(v) = p.error500_always {
            next.error500_always = v;
        }
        if let Some(v) = p.garbage {
            next.garbage = v;
        }
        if let Some(v) = p.rate_limit {
            effects.clear_rate_limit = apply_rate_limit(&mut next.rate_limit, &v)?;
        }
        if let Some(v) = p.protected {
            next.protected = v;
        }
        if let Some(v) = p.clock_offset_ms {
            next.clock_offset_ms = v;
        }
        if let Some(v) = p.string_codes {
            next.string_codes = v;
        }
        if let Some(v) = p.login_refusal {
            next.login_refusal = parse_login_refusal(&v)?;
        }
        if let Some(v) = p.auth_key_ttl_s {
            if v > MAX_AUTH_KEY_TTL_S {
                return Err(format!(
                    "auth_key_ttl_s must be at most {MAX_AUTH_KEY_TTL_S} (ten years)"
                ));
            }
            next.auth_key_ttl_s = v;
        }
        if let Some(hosts) = p.not_found_hosts {
            next.not_found_hosts = parse_hosts(&hosts)?;
        }
        *self = next;
        Ok(effects)
    }
}

/// `true`/`false`, or an object of optional settings. Returns whether to clear the counts.
fn apply_rate_limit(rl: &mut RateLimit, v: &Value) -> Result<bool, String> {
    const SHAPE: &str =
        "rate_limit must be true, false or {\"always\", \"per_10s\", \"block_s\", \"clear\"}";
    let obj = match v {
        Value::Bool(b) => {
            rl.always = *b;
            return Ok(false);
        }
        Value::Object(o) => o,
        _ => return Err(SHAPE.to_owned()),
    };
    let mut clear = false;
    for (key, val) in obj {
        match key.as_str() {
            "always" => rl.always = as_bool(val, "rate_limit.always")?,
            "clear" => clear = as_bool(val, "rate_limit.clear")?,
            "per_10s" => {
                rl.per_10s = as_u64(val, "rate_limit.per_10s", u64::from(u32::MAX))? as u32;
            }
            "block_s" => rl.block_s = as_u64(val, "rate_limit.block_s", MAX_RATE_LIMIT_BLOCK_S)?,
            other => return Err(format!("unknown field rate_limit.{other}; {SHAPE}")),
        }
    }
    Ok(clear)
}

/// `null` clears; `{message, count?}` sets.
fn parse_login_refusal(v: &Value) -> Result<Option<LoginRefusal>, String> {
    const SHAPE: &str = "login_refusal must be null or {\"message\": string, \"count\": n}";
    let obj: &Map<String, Value> = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(SHAPE.to_owned()),
    };
    let mut message = None;
    let mut count = 1;
    for (key, val) in obj {
        match key.as_str() {
            "message" => match val {
                Value::String(s) if !s.is_empty() => message = Some(s.clone()),
                _ => return Err("login_refusal.message must be a non-empty string".to_owned()),
            },
            "count" => count = as_u64(val, "login_refusal.count", u64::from(u32::MAX))? as u32,
            other => return Err(format!("unknown field login_refusal.{other}; {SHAPE}")),
        }
    }
    let message = message.ok_or_else(|| format!("login_refusal.message is missing; {SHAPE}"))?;
    if message.chars().count() > MAX_REFUSAL_CHARS {
        return Err(format!(
            "login_refusal.message must be at most {MAX_REFUSAL_CHARS} characters"
        ));
    }
    Ok(Some(LoginRefusal { message, count }))
}

/// Host names, lower-cased; a port or an empty name is an error.
fn parse_hosts(hosts: &[String]) -> Result<Vec<String>, String> {
    hosts
        .iter()
        .map(|h| {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if h.is_empty() || h.contains([':', '/', ' ']) {
                Err(format!(
                    "not_found_hosts: {h:?} is not a host name (no port, no scheme)"
                ))
            } else {
                Ok(h)
            }
        })
        .collect()
}

fn as_bool(v: &Value, name: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{name} must be true or false"))
}

fn as_u64(v: &Value, name: &str, max: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(format!("{name} must be a whole number from 0 to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(text: &str) -> Result<Effects, String> {
        let mut f = Faults::default();
        let p: FaultsPatch = serde_json::from_str(text).map_err(|e| e.to_string())?;
        f.apply(p)
    }

    fn applied(f: &mut Faults, text: &str) -> Result<Effects, String> {
        f.apply(serde_json::from_str(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn defaults_are_polyvs() {
        let f = Faults::default();
        assert_eq!(f.auth_key_ttl_s, 1800);
        assert_eq!((f.rate_limit.per_10s, f.rate_limit.block_s), (1500, 300));
        let v = json!(f);
        assert_eq!(v["login_refusal"], Value::Null);
        assert_eq!(v["rate_limit"]["always"], false);
    }

    #[test]
    fn rate_limit_shapes() {
        let mut f = Faults::default();
        applied(&mut f, r#"{"rate_limit":true}"#).unwrap();
        assert!(f.rate_limit.always);
        let e = applied(
            &mut f,
            r#"{"rate_limit":{"per_10s":5,"block_s":4,"clear":true}}"#,
        );
        assert_eq!(
            e,
            Ok(Effects {
                clear_rate_limit: true
            })
        );
        assert_eq!(
            f.rate_limit,
            RateLimit {
                always: true,
                per_10s: 5,
                block_s: 4
            }
        );
        for bad in [
            r#"{"rate_limit":1}"#,
            r#"{"rate_limit":{"per_10s":-1}}"#,
            r#"{"rate_limit":{"block_s":86401}}"#,
            r#"{"rate_limit":{"burst":3}}"#,
            r#"{"rate_limit":{"always":"yes"}}"#,
        ] {
            let e = patch(bad).unwrap_err();
            assert!(e.contains("rate_limit"), "{bad}: {e}");
        }
    }

    #[test]
    fn login_refusal_set_count_and_clear() {
        let mut f = Faults::default();
        applied(
            &mut f,
            r#"{"login_refusal":{"message":"channel in live","count":3}}"#,
        )
        .unwrap();
        assert_eq!(
            f.login_refusal,
            Some(LoginRefusal {
                message: "channel in live".into(),
                count: 3
            })
        );
        // Absent leaves it; null clears it.
        applied(&mut f, r#"{"garbage":false}"#).unwrap();
        assert!(f.login_refusal.is_some());
        applied(&mut f, r#"{"login_refusal":null}"#).unwrap();
        assert_eq!(f.login_refusal, None);
        applied(&mut f, r#"{"login_refusal":{"message":"x"}}"#).unwrap();
        assert_eq!(f.login_refusal.as_ref().map(|r| r.count), Some(1));
        for bad in [
            r#"{"login_refusal":{"count":2}}"#,
            r#"{"login_refusal":{"message":""}}"#,
            r#"{"login_refusal":{"message":"m","count":-2}}"#,
            r#"{"login_refusal":{"message":"m","why":1}}"#,
            r#"{"login_refusal":"channel in live"}"#,
        ] {
            let e = patch(bad).unwrap_err();
            assert!(e.contains("login_refusal"), "{bad}: {e}");
        }
        let long = format!(
            r#"{{"login_refusal":{{"message":"{}"}}}}"#,
            "x".repeat(1001)
        );
        assert!(patch(&long).is_err());
    }

    #[test]
    fn all_or_nothing_and_hosts() {
        let mut f = Faults::default();
        let e = applied(
            &mut f,
            r#"{"garbage":true,"auth_key_ttl_s":999999999999,"string_codes":true}"#,
        );
        assert!(e.unwrap_err().contains("auth_key_ttl_s"));
        assert_eq!(f, Faults::default());
        applied(
            &mut f,
            r#"{"not_found_hosts":["API.polyv.net.", "live.polyv.net"],"auth_key_ttl_s":0}"#,
        )
        .unwrap();
        assert_eq!(f.not_found_hosts, ["api.polyv.net", "live.polyv.net"]);
        assert_eq!(f.auth_key_ttl_s, 0);
        for bad in [
            r#"{"not_found_hosts":["api.polyv.net:443"]}"#,
            r#"{"not_found_hosts":[""]}"#,
            r#"{"not_found_hosts":["https://api.polyv.net"]}"#,
        ] {
            assert!(patch(bad).unwrap_err().contains("not_found_hosts"), "{bad}");
        }
        assert!(patch(r#"{"not_found_hosts":"api.polyv.net"}"#).is_err());
    }
}
