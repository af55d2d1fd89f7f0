//! The HTTP side: one axum fallback handler that reads the whole request (with its `Host` and
//! the client's address, [`Peer`]), applies the latency fault, calls [`handlers::handle`]
//! under the state lock and writes the reply with the simulator's own `Date` header (shifted
//! by the clock-offset fault). Plain or TLS listeners both end up here.
//!
//! Logs carry method, host, path and status only: queries and bodies hold secrets and
//! signatures.
//! Lines marked (inferred) are choices of this simulator, not Polyv behaviour.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONTENT_TYPE, DATE, HOST};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::handlers::{self, is_control};
use crate::hosts::host_name;
use crate::reply::{Flavor, Reply, E_VALIDATION};
use crate::state::{Seen, SimState};
use crate::tls::Peer;
use crate::util::{http_date, shifted, system_now_ms};

/// The shared simulator state.
pub type Shared = Arc<Mutex<SimState>>;

/// Largest request body read; bigger ones get HTTP 413. (inferred)
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The latency fault is capped so a test cannot hang a connection forever.
pub const MAX_LATENCY_MS: u64 = 600_000;

/// Locks the state, recovering from poisoning (a panic elsewhere must not stop the sim).
pub fn lock(sim: &Shared) -> MutexGuard<'_, SimState> {
    sim.lock().unwrap_or_else(|e| e.into_inner())
}

/// The router: every path goes to one handler, which does its own routing. Serve it with
/// `into_make_service_with_connect_info::<Peer>()` so the client's IP is known.
pub fn router(sim: Shared) -> Router {
    Router::new().fallback(any).with_state(sim)
}

async fn any(State(sim): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    // An absolute-form request line names the host itself; otherwise the Host header does.
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .and_then(|h| host_name(&h));
    let client_ip = parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(addr))| addr.ip());
    let query = parts.uri.query().unwrap_or("").to_owned();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let control = is_control(&path);

    if !control {
        let latency = lock(&sim).faults.latency_ms.min(MAX_LATENCY_MS);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
    }

    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
    let (reply, date) = {
        let mut st = lock(&sim);
        let now = system_now_ms();
        let reply = match &body {
            Ok(bytes) => handlers::handle(
                &mut st,
                &handlers::Request {
                    method: &method,
                    path: &path,
                    query: &query,
                    content_type: content_type.as_deref(),
                    body: bytes,
                    host: host.as_deref(),
                    client_ip,
                },
                now,
            ),
            Err(_) => {
                let r =
                    Flavor::for_path(&path).error(413, E_VALIDATION, "request entity too large");
                if !control {
                    let at = shifted(now, st.faults.clock_offset_ms);
                    let seen = Seen {
                        method: &method,
                        host: host.as_deref(),
                        path: &path,
                        ip: client_ip,
                    };
                    st.record(seen, r.status, at);
                }
                r
            }
        };
        (reply, http_date(shifted(now, st.faults.clock_offset_ms)))
    };
    let host = host.as_deref().unwrap_or("-");
    if control {
        tracing::debug!(%method, host, %path, status = reply.status, "control request");
    } else {
        tracing::info!(%method, host, %path, status = reply.status, "request");
    }
    into_response(reply, &date)
}

fn into_response(reply: Reply, date: &str) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Body::from(reply.body)).into_response();
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if let Ok(v) = HeaderValue::from_str(date) {
        headers.insert(DATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CliOverrides, FileConfig, SimConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start() -> (std::net::SocketAddr, Shared) {
        let st = SimConfig::build(FileConfig::default(), CliOverrides::default())
            .unwrap()
            .into_state();
        let sim: Shared = Arc::new(Mutex::new(st));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(sim.clone()).into_make_service_with_connect_info::<Peer>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, sim)
    }

    /// Sends one raw HTTP/1.1 request and returns (status line, headers lowercased, body).
    async fn raw(addr: std::net::SocketAddr, request: String) -> (String, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (
            status.to_owned(),
            headers.to_ascii_lowercase(),
            body.to_owned(),
        )
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn http_round_trip_headers_and_faults() {
        let (addr, sim) = start().await;
        let (status, headers, body) = raw(addr, get("/front/listUsers?roomId=153884")).await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(
            headers.contains("content-type: application/json"),
            "{headers}"
        );
        assert_eq!(
            headers.matches("\r\ndate: ").count() + usize::from(headers.starts_with("date: ")),
            1,
            "{headers}"
        );
        assert_eq!(body, r#"{"count":0,"userlist":[]}"#);

        // The Date header follows the fault clock.
        lock(&sim).faults.clock_offset_ms = -10 * 365 * 86_400_000;
        let (_, headers, _) = raw(addr, get("/nowhere")).await;
        let year_now = http_date(system_now_ms())[12..16].parse::<i32>().unwrap();
        assert!(
            headers.contains(&format!(" {} ", year_now - 10)),
            "{headers}"
        );

        let (status, headers, body) = raw(
            addr,
            "POST /_sim/faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"garbage\":true}".into(),
        )
        .await;
        assert!(status.contains(" 200 "), "{status} {body}");
        assert!(headers.contains("application/json"));
        let (status, headers, body) = raw(addr, get("/front/listUsers")).await;
        assert!(status.contains(" 200 "));
        assert!(headers.contains("content-type: text/html"), "{headers}");
        assert!(body.contains("502 Bad Gateway"));

        let (_, _, body) = raw(addr, get("/_sim/requests")).await;
        let log: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(log.as_array().unwrap().len(), 3, "{body}");
        assert_eq!(log[0]["path"], "/front/listUsers");
        assert_eq!(log[0]["host"], "x");
        assert_eq!(log[0]["ip"], "127.0.0.1");
        assert!(log[0]["at_ms"].as_i64().unwrap() > 1_600_000_000_000);
    }
}
