//! Lesson control over HTTP: `POST /extend` (`{"minutes": N}`, or `?minutes=N`), `POST /start`
//! and `POST /stop`, behind the same auth as `POST /reconnect`. Each sends a
//! [`ControlRequest`] to the service loop through the hub and answers with what the loop
//! decided: 200 and the override now in force, 409 with the reason it was refused (what to
//! do instead), 503 when no service takes requests. The body's optional `by` (`cli`, `page`;
//! letters, digits, `-` and `_`, at most 32) says who asked; `api` when absent.

use super::hub::StatusHub;
use crate::schedule::{ControlAction, ControlError, Effective, Override};
use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// What the service answers: the schedule with the new override applied, or why not.
pub type ControlReply = Result<Effective, ControlError>;

/// One operator request for the service loop, with where to send the answer.
#[derive(Debug)]
pub struct ControlRequest {
    pub action: ControlAction,
    /// Who asked: `cli`, `page`, `api`.
    pub by: String,
    pub reply: Option<tokio::sync::oneshot::Sender<ControlReply>>,
}

impl ControlRequest {
    /// A request and the receiver of its answer.
    pub fn new(
        action: ControlAction,
        by: &str,
    ) -> (ControlRequest, tokio::sync::oneshot::Receiver<ControlReply>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            ControlRequest {
                action,
                by: by.to_string(),
                reply: Some(tx),
            },
            rx,
        )
    }

    /// Sends the answer (nobody waiting is fine).
    pub fn answer(mut self, r: ControlReply) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(r);
        }
    }
}

/// How long a request waits for the service loop.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// `/status`'s `schedule.override`.
pub(super) fn override_json(o: &Override) -> Value {
    json!({
        "kind": o.kind.as_str(),
        "until": rfc3339(o.until),
        "set_at": rfc3339(o.set_at),
        "by": o.by,
    })
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn answer(code: StatusCode, v: Value) -> Response {
    (
        code,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(v),
    )
        .into_response()
}

fn refused(code: StatusCode, message: impl Into<String>) -> Response {
    answer(code, json!({ "ok": false, "error": message.into() }))
}

/// The request's fields: JSON body (`minutes`, `by`), or the query string.
fn fields(uri: &Uri, body: &Bytes) -> Result<(Option<u64>, String), String> {
    let mut minutes = None;
    let mut by = None;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            format!("the body is not JSON ({e}): send {{\"minutes\": 15}}, or nothing")
        })?;
        if let Some(m) = v.get("minutes") {
            minutes = Some(
                m.as_u64()
                    .ok_or("minutes must be a whole number, such as 15")?,
            );
        }
        by = v.get("by").and_then(Value::as_str).map(str::to_string);
    }
    for kv in uri.query().unwrap_or("").split('&') {
        match kv.split_once('=') {
            Some(("minutes", m)) => {
                minutes = Some(
                    m.parse()
                        .map_err(|_| "minutes must be a whole number, such as 15")?,
                )
            }
            Some(("by", b)) => by = Some(b.to_string()),
            _ => {}
        }
    }
    let by = by
        .filter(|b| {
            !b.is_empty()
                && b.len() <= 32
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
        .unwrap_or_else(|| "api".into());
    Ok((minutes, by))
}

/// The three routes: `extend`, `start`, `stop`.
pub(super) async fn handle(hub: &StatusHub, route: &str, uri: &Uri, body: &Bytes) -> Response {
    let (minutes, by) = match fields(uri, body) {
        Ok(f) => f,
        Err(e) => return refused(StatusCode::BAD_REQUEST, e),
    };
    let action = match route {
        "extend" => match minutes {
            Some(m) => ControlAction::Extend {
                minutes: u32::try_from(m).unwrap_or(u32::MAX),
            },
            None => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "say how long: {\"minutes\": 15} (1 to 480)",
                )
            }
        },
        "start" => ControlAction::StartNow,
        _ => ControlAction::StopNow,
    };
    let Some(tx) = hub.control_sender() else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "lesson control is not available: no service loop takes requests",
        );
    };
    let (req, rx) = ControlRequest::new(action, &by);
    if tx.send(req).await.is_err() {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping");
    }
    match tokio::time::timeout(ANSWER_WITHIN, rx).await {
        Ok(Ok(Ok(eff))) => {
            tracing::info!(
                action = action.as_str(),
                by,
                "lesson control asked over HTTP"
            );
            let message = describe(&eff);
            answer(
                StatusCode::OK,
                json!({
                    "ok": true,
                    "message": message,
                    "on": eff.on,
                    "reason": eff.why.as_str(),
                    "end": eff.end.map(rfc3339),
                    "override": eff.control.as_ref().map(override_json),
                }),
            )
        }
        Ok(Ok(Err(e))) => refused(StatusCode::CONFLICT, e.to_string()),
        _ => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service did not answer in time; look at `journalctl -u polypush`",
        ),
    }
}

/// One line on what broadcasts now.
pub fn describe(eff: &Effective) -> String {
    let end = eff.end.map(rfc3339).unwrap_or_default();
    match (eff.on, eff.why.as_str()) {
        (true, "extended") => format!("extended: broadcasting until {end}"),
        (true, "started_now") => format!("started: broadcasting until {end}"),
        (true, _) => format!("broadcasting until {end}"),
        (false, "stopped_now") => format!(
            "stopped: no broadcast until {}",
            eff.control
                .as_ref()
                .map(|o| rfc3339(o.until))
                .unwrap_or_default()
        ),
        (false, _) => "not broadcasting".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_the_body_or_the_query() {
        let uri: Uri = "/extend".parse().unwrap();
        let (m, by) = fields(
            &uri,
            &Bytes::from_static(b"{\"minutes\": 15, \"by\": \"page\"}"),
        )
        .unwrap();
        assert_eq!((m, by.as_str()), (Some(15), "page"));
        let uri: Uri = "/extend?minutes=30".parse().unwrap();
        let (m, by) = fields(&uri, &Bytes::new()).unwrap();
        assert_eq!((m, by.as_str()), (Some(30), "api"));
        let (_, by) = fields(&uri, &Bytes::from_static(b"{\"by\": \"<script>\"}")).unwrap();
        assert_eq!(by, "api", "a label that is not a plain word is not kept");
        assert!(fields(&uri, &Bytes::from_static(b"minutes=5")).is_err());
        let uri: Uri = "/extend?minutes=x".parse().unwrap();
        assert!(fields(&uri, &Bytes::new()).is_err());
    }
}
