//! Reading Polyv's answers: the three reply shapes (the flat push-client objects, the v3 and
//! v4 envelopes) and the classification of a failed answer into the [`PlatformError`] that
//! says what to do. Pure: an [`Answer`] in, a verdict out.
//!
//! What Polyv sends, from its errorinfo page and its clients (`/work/notes/polyv-research.md`
//! §5): `code` 200 success, 40X field validation, 500 with `status: "fail"` a business refusal
//! (not a server fault: never retried). `code` is a number in the documents but may come as a
//! string (`"200"`). Login refusals other than a wrong password (`channel already login`,
//! `channel in live`, `channel forbid login`, …) are matched on the message before anything
//! looks at the code, because they come with code 500.

use bytes::Bytes;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{PlatformError, Skew};

/// The API name teacher_login errors carry.
pub(super) const LOGIN_API: &str = "teacher_login";

/// A raw answer: status, server time (from `Date`), when the request was signed, body.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) server_ms: Option<u64>,
    pub(super) sent_ms: u64,
    pub(super) body: Bytes,
}

pub(super) fn undecodable(api: &'static str, a: &Answer) -> PlatformError {
    let shown: String = String::from_utf8_lossy(&a.body[..a.body.len().min(80)])
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    PlatformError::Undecodable {
        api,
        status: a.status.as_u16(),
        first_bytes: shown,
    }
}

pub(super) fn decode<T: DeserializeOwned>(
    api: &'static str,
    a: &Answer,
) -> Result<T, PlatformError> {
    serde_json::from_slice(&a.body).map_err(|_| undecodable(api, a))
}

/// Polyv's message, wherever this endpoint puts it.
fn message_of(v: &Value) -> String {
    for ptr in ["/error/desc", "/message", "/msg", "/result"] {
        if let Some(s) = v.pointer(ptr).and_then(Value::as_str) {
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    String::new()
}

/// The envelope's `code`, a number or a numeric string.
fn code_of(v: &Value) -> Option<i64> {
    match &v["code"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A login refusal that is not about the password, by Polyv's message (errorinfo page):
/// the `reason` of [`PlatformError::LoginRefused`].
fn login_refusal(lower: &str) -> Option<&'static str> {
    if lower.contains("channel already login") || lower.contains("conflict with user login") {
        Some("already_logged_in")
    } else if lower.contains("channel in live") {
        Some("channel_live")
    } else if lower.contains("forbid login") {
        // `channel forbid login` (the page), `forbid login` (the README's shorter form).
        Some("login_forbidden")
    } else {
        None
    }
}

/// A flat reply (login, listUsers) is fine when it carries the expected fields.
pub(super) fn check_flat(
    api: &'static str,
    a: &Answer,
    fields: &[&str],
    channel: &str,
) -> Option<PlatformError> {
    if a.status.is_success() {
        if let Ok(v) = serde_json::from_slice::<Value>(&a.body) {
            if fields.iter().all(|f| !v[f].is_null()) {
                return None;
            }
        }
    }
    Some(classify_answer(api, a, channel))
}

/// v3 `{code, status, message, data}` and v4 `{code, status, success, error, data}`.
pub(super) fn check_envelope(api: &'static str, a: &Answer) -> Option<PlatformError> {
    if let Ok(v) = serde_json::from_slice::<Value>(&a.body) {
        let code_ok = code_of(&v) == Some(200);
        let status_ok = v["status"] == "success";
        let success_ok = v.get("success").is_none_or(|s| s == true);
        if a.status.is_success() && code_ok && status_ok && success_ok {
            return None;
        }
    }
    Some(classify_answer(api, a, ""))
}

/// The envelope's `data` as `T`.
pub(super) fn envelope_data<T: DeserializeOwned>(
    api: &'static str,
    a: &Answer,
) -> Result<T, PlatformError> {
    let v: Value = decode(api, a)?;
    serde_json::from_value(v["data"].clone()).map_err(|_| undecodable(api, a))
}

/// Turns a failed answer into the error that tells the user what to do.
pub(super) fn classify_answer(api: &'static str, a: &Answer, channel: &str) -> PlatformError {
    let status = a.status.as_u16();
    let Ok(v) = serde_json::from_slice::<Value>(&a.body) else {
        return if status >= 500 || status == 429 {
            PlatformError::Server {
                api,
                status,
                message: "no readable body".into(),
                attempts: 1,
            }
        } else {
            undecodable(api, a)
        };
    };
    let message = message_of(&v);
    let lower = message.to_ascii_lowercase();
    let code = code_of(&v).unwrap_or(0);
    // `status: "fail"` is Polyv's business refusal (code 500): an answer, not a server fault.
    let refusal = v["status"] == "fail";
    let login_refused = if api == LOGIN_API {
        login_refusal(&lower)
    } else {
        None
    };
    if let Some(reason) = login_refused {
        PlatformError::LoginRefused {
            channel_id: channel.to_string(),
            message,
            reason,
        }
    } else if lower.contains("qps exceeds") {
        PlatformError::RateLimited { api, message }
    } else if lower.contains("invalid signature") || code == 403 || status == 403 {
        PlatformError::SignatureRejected { api, message }
    } else if lower.contains("invalid timestamp") {
        let skew = a.server_ms.map(|server| a.sent_ms as i64 - server as i64);
        PlatformError::StaleTimestamp {
            api,
            skew: Skew(skew),
        }
    } else if lower.contains("application not found") {
        PlatformError::AppRejected { message }
    } else if lower.contains("password") && (api == LOGIN_API || lower.contains("channel id")) {
        PlatformError::CredentialsRejected {
            channel_id: channel.to_string(),
            message,
        }
    } else if !refusal && (status >= 500 || code >= 500 || status == 429) {
        PlatformError::Server {
            api,
            status,
            message: if message.is_empty() {
                "no message".into()
            } else {
                message
            },
            attempts: 1,
        }
    } else if message.is_empty() || status == 404 {
        // HTTP 404: nothing of Polyv's at this URL (a wrong endpoint, or a proxy's page).
        undecodable(api, a)
    } else {
        PlatformError::Validation { api, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            server_ms: Some(1_000_000),
            sent_ms: 1_200_000,
            body: Bytes::from(body.to_string()),
        }
    }

    fn login(status: u16, body: &str) -> PlatformError {
        classify_answer(LOGIN_API, &answer(status, body), "153884")
    }

    #[test]
    fn classification_of_documented_errors() {
        let c = |s, b| classify_answer("x", &answer(s, b), "153884");
        assert!(matches!(
            c(
                403,
                r#"{"code":403,"status":"error","message":"invalid signature.","data":""}"#
            ),
            PlatformError::SignatureRejected { .. }
        ));
        match c(
            400,
            r#"{"code":400,"status":"error","message":"invalid timestamp.","data":""}"#,
        ) {
            PlatformError::StaleTimestamp { skew, .. } => assert_eq!(skew, Skew(Some(200_000))),
            e => panic!("{e}"),
        }
        assert!(matches!(
            c(
                400,
                r#"{"code":400,"status":"error","message":"qps exceeds number of calls"}"#
            ),
            PlatformError::RateLimited { .. }
        ));
        assert!(matches!(
            c(
                400,
                r#"{"code":400,"status":"error","error":{"code":20001,"desc":"application not found."},"success":false}"#
            ),
            PlatformError::AppRejected { .. }
        ));
        assert!(matches!(
            c(
                400,
                r#"{"code":400,"status":"error","message":"scene not right.","data":""}"#
            ),
            PlatformError::Validation { .. }
        ));
        assert!(matches!(
            c(502, "<html>bad gateway</html>"),
            PlatformError::Server { .. }
        ));
        match c(200, "<html>captive portal login</html>") {
            PlatformError::Undecodable { first_bytes, .. } => {
                assert!(first_bytes.starts_with("<html>captive"))
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            login(
                200,
                r#"{"status":"error","msg":"channel id or password error"}"#
            ),
            PlatformError::CredentialsRejected { .. }
        ));
    }

    /// Polyv's errorinfo page: the login refusals besides a wrong password, in the shapes
    /// they may come in (code 500 with status fail, code as a string, `msg` or `message`).
    #[test]
    fn login_refusals_are_classed_by_message_before_the_code() {
        for (body, reason) in [
            (
                r#"{"code":500,"status":"fail","message":"channel already login","data":""}"#,
                "already_logged_in",
            ),
            (
                r#"{"code":"500","status":"fail","msg":"conflict with user login"}"#,
                "already_logged_in",
            ),
            (
                r#"{"code":500,"status":"fail","message":"channel in live"}"#,
                "channel_live",
            ),
            (
                r#"{"status":"error","msg":"channel forbid login"}"#,
                "login_forbidden",
            ),
            (
                r#"{"code":"400","status":"error","message":"forbid login"}"#,
                "login_forbidden",
            ),
        ] {
            for http in [200, 500] {
                match login(http, body) {
                    PlatformError::LoginRefused {
                        reason: r,
                        channel_id,
                        message,
                    } => {
                        assert_eq!((r, channel_id.as_str()), (reason, "153884"), "{body}");
                        assert!(!message.is_empty());
                    }
                    e => panic!("HTTP {http} {body}: {e:?}"),
                }
            }
        }
        // The wrong password stays what it was, in every shape.
        for body in [
            r#"{"code":500,"status":"fail","message":"channel id or password error"}"#,
            r#"{"code":"400","status":"error","msg":"channel id or password error"}"#,
        ] {
            assert!(
                matches!(login(200, body), PlatformError::CredentialsRejected { .. }),
                "{body}"
            );
        }
        // A refusal polypush does not know: Validation (the broadcast tries again later),
        // not a server error, although it says 500: `fail` is an answer.
        let e = login(
            200,
            r#"{"code":500,"status":"fail","message":"please user pure video scene channel login"}"#,
        );
        assert!(matches!(e, PlatformError::Validation { .. }), "{e:?}");
        assert!(!e.is_retryable());
        // `channel in no live` is not `channel in live`.
        assert!(matches!(
            login(
                200,
                r#"{"code":500,"status":"fail","message":"channel in no live"}"#
            ),
            PlatformError::Validation { .. }
        ));
        // Other APIs do not turn these messages into login refusals.
        assert!(matches!(
            classify_answer(
                "channel rename",
                &answer(
                    200,
                    r#"{"code":500,"status":"fail","message":"channel in live"}"#
                ),
                "1"
            ),
            PlatformError::Validation { .. }
        ));
    }

    #[test]
    fn code_may_be_a_string_and_fail_is_not_a_server_error() {
        let ok = answer(
            200,
            r#"{"code":"200","status":"success","message":"","data":3}"#,
        );
        assert!(check_envelope("x", &ok).is_none());
        assert_eq!(envelope_data::<u64>("x", &ok).unwrap(), 3);
        let e = check_envelope(
            "x",
            &answer(200, r#"{"code":"403","status":"error","message":"bad"}"#),
        )
        .unwrap();
        assert!(
            matches!(e, PlatformError::SignatureRejected { .. }),
            "{e:?}"
        );
        let e = check_envelope(
            "x",
            &answer(
                200,
                r#"{"code":"500","status":"fail","message":"access forbidden"}"#,
            ),
        )
        .unwrap();
        assert!(matches!(e, PlatformError::Validation { .. }), "{e:?}");
        // A 500 that is not `fail` is still the server's fault, and retried.
        let e = check_envelope(
            "x",
            &answer(
                500,
                r#"{"code":"500","status":"error","message":"internal error"}"#,
            ),
        )
        .unwrap();
        assert!(e.is_retryable(), "{e:?}");
        assert!(
            check_envelope("x", &answer(200, r#"{"code":"2O0","status":"success"}"#)).is_some()
        );
    }

    #[test]
    fn not_found_points_at_the_endpoints() {
        let e = classify_answer(
            "x",
            &answer(
                404,
                r#"{"code":404,"status":"error","message":"not found","data":""}"#,
            ),
            "",
        );
        assert!(
            matches!(e, PlatformError::Undecodable { status: 404, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("[polyv.endpoints]"), "{e}");
    }
}
