//! Responses as plain data ([`Reply`]) and the Polyv envelopes: v3, v4, the push-client
//! shapes, and the fault bodies.
//!
//! Handlers build a [`Reply`]; only the server module turns it into an HTTP response.
//! Lines marked (inferred) are guesses from /work/shared/polyv-api/README.md.

use rand::Rng;
use serde_json::{json, Value};

pub const JSON: &str = "application/json;charset=UTF-8";
pub const TEXT: &str = "text/plain;charset=UTF-8";
pub const HTML: &str = "text/html;charset=UTF-8";

/// The body the `garbage` fault answers with, as a misconfigured proxy would.
pub const GARBAGE_BODY: &str = "<html><body>502 Bad Gateway upstream error</body></html>";
/// The body of [`host_not_found`].
pub const NOT_FOUND_PAGE: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// v4 `error.code` values. (inferred: Polyv documents 20001 for application not found only)
pub const E_APP_NOT_FOUND: u32 = 20001;
pub const E_TIMESTAMP: u32 = 20002;
pub const E_SIGNATURE: u32 = 20003;
pub const E_APPID_REQUIRED: u32 = 20004;
pub const E_VALIDATION: u32 = 20005;
/// (inferred) for the rate-limit and internal-error faults on v4 paths.
pub const E_RATE_LIMIT: u32 = 20006;
pub const E_INTERNAL: u32 = 20007;
pub const E_NOT_FOUND: u32 = 20008;

/// An HTTP response before it is an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Reply {
            status,
            content_type: JSON,
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Reply {
            status,
            content_type: TEXT,
            body: body.to_owned(),
        }
    }

    pub fn garbage() -> Self {
        Reply {
            status: 200,
            content_type: HTML,
            body: GARBAGE_BODY.to_owned(),
        }
    }

    /// The body parsed as JSON (tests only; `Null` when it is not JSON).
    #[cfg(test)]
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Which envelope a path answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    V3,
    V4,
}

impl Flavor {
    /// v4 for `/live/v4/...`, v3 for everything else.
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/live/v4/") {
            Flavor::V4
        } else {
            Flavor::V3
        }
    }

    /// An error in this flavor's envelope (`v4_code` is used only by v4).
    pub fn error(self, http: u16, v4_code: u32, msg: &str) -> Reply {
        match self {
            Flavor::V3 => v3_err(http, msg),
            Flavor::V4 => v4_err(http, v4_code, msg),
        }
    }
}

/// v3 success: `{code:200,status:"success",message:"",data}`.
pub fn v3_ok(data: Value) -> Reply {
    Reply::json(
        200,
        &json!({"code": 200, "status": "success", "message": "", "data": data}),
    )
}

/// v3 error with HTTP status = `code`. `data` is `400` for the two messages Polyv documents
/// that way, `""` otherwise.
pub fn v3_err(code: u16, message: &str) -> Reply {
    let data = if message == PARAM_VALIDATE || message == JSON_FORMAT {
        json!(400)
    } else {
        json!("")
    };
    Reply::json(
        code,
        &json!({"code": code, "status": "error", "message": message, "data": data}),
    )
}

/// v4 success: `{code:200,status:"success",requestId,data,success:true}`.
pub fn v4_ok(data: Value) -> Reply {
    Reply::json(
        200,
        &json!({
            "code": 200,
            "status": "success",
            "requestId": request_id(),
            "data": data,
            "success": true,
        }),
    )
}

/// v4 error: `{code,status:"error",requestId,error:{code,desc},success:false}`.
pub fn v4_err(http: u16, code: u32, desc: &str) -> Reply {
    Reply::json(
        http,
        &json!({
            "code": http,
            "status": "error",
            "requestId": request_id(),
            "error": {"code": code, "desc": desc},
            "success": false,
        }),
    )
}

/// Push-client error for a field check (teacher_login, notify_stream2):
/// `{status:"error",code,msg,message}`. `msg` is what Polyv's iOS SDK reads; `message` is
/// the name Polyv's error page uses. (inferred: both carry the same text)
pub fn push_err(http: u16, code: u16, msg: &str) -> Reply {
    Reply::json(
        http,
        &json!({"status": "error", "code": code, "msg": msg, "message": msg}),
    )
}

/// A login refused for a business reason (wrong password, `channel in live`, …), HTTP 200:
/// `{code:"500",status:"fail",message,msg}`. Polyv's error page gives business-logic errors
/// code 500 and status `fail`; the login reply's `code` may be a string. (inferred: which
/// refusal carries which code, and the HTTP status)
pub fn login_refused(msg: &str) -> Reply {
    Reply::json(
        200,
        &json!({"code": "500", "status": "fail", "message": msg, "msg": msg}),
    )
}

/// A host that serves nothing: the HTML page nginx answers 404 with. (inferred)
pub fn host_not_found() -> Reply {
    Reply {
        status: 404,
        content_type: HTML,
        body: NOT_FOUND_PAGE.to_owned(),
    }
}

/// The `string_codes` fault: a JSON object's numeric top-level `code` becomes a string
/// (`200` -> `"200"`). Any other body is returned unchanged.
pub fn with_string_code(mut reply: Reply) -> Reply {
    if reply.content_type != JSON {
        return reply;
    }
    let Ok(mut v) = serde_json::from_str::<Value>(&reply.body) else {
        return reply;
    };
    if let Some(code) = v.get_mut("code") {
        if code.is_number() {
            *code = Value::String(code.to_string());
            reply.body = v.to_string();
        }
    }
    reply
}

/// Rename error: `{status:"error",result}`.
pub fn rename_err(http: u16, result: &str) -> Reply {
    Reply::json(http, &json!({"status": "error", "result": result}))
}

/// A request id shaped like Polyv's `ddf972812a804e0ba9122fd721274592.69.16590638894645319`.
fn request_id() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{:032x}.{}.{}",
        rng.gen::<u128>(),
        rng.gen_range(1..200),
        rng.gen_range(10_000_000_000_000_000u64..100_000_000_000_000_000)
    )
}

pub const PARAM_VALIDATE: &str = "param validate error";
pub const JSON_FORMAT: &str = "json format error";
pub const INVALID_TIMESTAMP: &str = "invalid timestamp.";
pub const INVALID_SIGNATURE: &str = "invalid signature.";
pub const APP_ID_REQUIRED: &str = "appId is required.";
pub const APP_NOT_FOUND: &str = "application not found.";
pub const QPS_EXCEEDED: &str = "qps exceeds number of calls";
pub const INTERNAL_ERROR: &str = "internal server error";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_data_shapes() {
        assert_eq!(v3_err(400, PARAM_VALIDATE).value()["data"], json!(400));
        assert_eq!(v3_err(400, JSON_FORMAT).value()["data"], json!(400));
        assert_eq!(v3_err(403, INVALID_SIGNATURE).value()["data"], json!(""));
        assert_eq!(v3_err(403, INVALID_SIGNATURE).status, 403);
        assert_eq!(v3_ok(json!("")).value()["message"], json!(""));
    }

    #[test]
    fn login_refusal_and_string_codes() {
        let r = login_refused("channel in live");
        assert_eq!(
            (r.status, r.value()),
            (
                200,
                json!({"code":"500","status":"fail","message":"channel in live","msg":"channel in live"})
            )
        );
        let v = with_string_code(v3_err(403, INVALID_SIGNATURE)).value();
        assert_eq!(v["code"], json!("403"));
        assert_eq!(v["message"], json!(INVALID_SIGNATURE));
        assert_eq!(
            with_string_code(v3_ok(json!(3))).value()["code"],
            json!("200")
        );
        let v = with_string_code(v4_err(400, E_APP_NOT_FOUND, APP_NOT_FOUND)).value();
        assert_eq!(
            (v["code"].clone(), v["error"]["code"].clone()),
            (json!("400"), json!(20001))
        );
        assert_eq!(
            with_string_code(push_err(400, 400, "x")).value()["code"],
            json!("400")
        );
        assert_eq!(with_string_code(Reply::garbage()), Reply::garbage());
        assert_eq!(with_string_code(Reply::text(200, "1")).body, "1");
        assert_eq!(host_not_found().status, 404);
    }

    #[test]
    fn v4_shapes() {
        let e = v4_err(400, E_APP_NOT_FOUND, APP_NOT_FOUND).value();
        assert_eq!(e["success"], json!(false));
        assert_eq!(e["error"]["code"], json!(20001));
        assert_eq!(e["code"], json!(400));
        assert!(e["requestId"].as_str().unwrap().len() > 32);
        let ok = v4_ok(json!([])).value();
        assert_eq!(ok["success"], json!(true));
        assert!(ok.get("error").is_none());
    }
}
