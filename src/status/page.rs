//! The status page at `/` and the login form at `/login`: HTML, CSS and JS embedded in the
//! binary (`web/`, through `include_str!`; no CDN, no web fonts, works with no internet),
//! rendered in the language negotiated here, served with an `ETag` (304 on `If-None-Match`).
//!
//! - Language: `?lang=zh-CN|en` wins; otherwise `Accept-Language`: any `zh*` ranked above
//!   every `en*` gives Simplified Chinese, anything else English. The server sets
//!   `<html lang>`, fills the static text and embeds that language's string table for the
//!   script (one table per language in `web/i18n.json`), and answers `Vary: Accept-Language`.
//! - The page polls `/status` (1 s), `/meter` (250 ms) and `/snapshot.jpg` (2 s) with short
//!   `fetch`es only; it shows what is missing (404) or unavailable (503) and carries on.
//! - Alarm names are shown translated; the elements keep the fixed names (`data-alarm`), as
//!   `/metrics` does.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const INDEX: &str = include_str!("../../web/index.html");
const LOGIN: &str = include_str!("../../web/login.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const I18N: &str = include_str!("../../web/i18n.json");

/// The page's languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    ZhCn,
    En,
}

impl Lang {
    /// The BCP 47 tag, as in `<html lang>` and `?lang=`.
    pub(super) fn tag(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    fn other(self) -> Lang {
        match self {
            Lang::ZhCn => Lang::En,
            Lang::En => Lang::ZhCn,
        }
    }

    /// `?lang=` values: `zh`, `zh-CN`, `zh-Hans`… and `en`, `en-US`… (any case).
    pub(super) fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().to_ascii_lowercase();
        let primary = s.split(['-', '_']).next().unwrap_or("");
        match primary {
            "zh" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// `Accept-Language` (RFC 9110 §12.5.4): the best-ranked `zh*` against the best-ranked
    /// `en*`, by q-value and then by position; Chinese only when it ranks above English.
    pub(super) fn from_accept_language(header: &str) -> Lang {
        // (q, position) of the best zh and en ranges; a higher q wins, then the earlier one.
        let mut best: [Option<(f32, usize)>; 2] = [None, None];
        for (pos, item) in header.split(',').enumerate() {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|v| v.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            if q <= 0.0 {
                continue;
            }
            let slot = match Lang::parse(range) {
                Some(Lang::ZhCn) => 0,
                Some(Lang::En) => 1,
                None => continue,
            };
            let better = match best[slot] {
                None => true,
                Some((bq, _)) => q > bq,
            };
            if better {
                best[slot] = Some((q, pos));
            }
        }
        match best {
            [Some(_), None] => Lang::ZhCn,
            [Some((zq, zp)), Some((eq, ep))] if zq > eq || (zq == eq && zp < ep) => Lang::ZhCn,
            _ => Lang::En,
        }
    }

    /// `?lang=` if valid, else `Accept-Language`.
    pub(super) fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Lang {
        query.and_then(Lang::parse).unwrap_or_else(|| {
            headers
                .get_all(header::ACCEPT_LANGUAGE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(Lang::from_accept_language)
                .find(|l| *l == Lang::ZhCn)
                .unwrap_or(Lang::En)
        })
    }
}

/// `lang` from a query string (`a=b&lang=zh-CN`).
pub(super) fn lang_query(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "lang")
        .map(|(_, v)| v)
}

/// The string tables, one per language.
static STRINGS: LazyLock<[Map<String, Value>; 2]> = LazyLock::new(|| {
    let all: Map<String, Value> = serde_json::from_str(I18N).expect("web/i18n.json is JSON");
    let table = |tag: &str| {
        all.get(tag)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| panic!("web/i18n.json has no {tag:?} table"))
    };
    [table("zh-CN"), table("en")]
});

fn strings(lang: Lang) -> &'static Map<String, Value> {
    &STRINGS[match lang {
        Lang::ZhCn => 0,
        Lang::En => 1,
    }]
}

/// A string of `lang`'s table (the key itself if missing: the unit tests keep them all).
pub(super) fn text(lang: Lang, key: &str) -> &'static str {
    strings(lang)
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("?")
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short strong validator: the first 16 hex digits of the body's SHA-256, quoted.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..16])
}

static JS_ETAG: LazyLock<String> = LazyLock::new(|| etag_of(APP_JS.as_bytes()));
static CSS_ETAG: LazyLock<String> = LazyLock::new(|| etag_of(APP_CSS.as_bytes()));

/// Fills `{{lang}}`, `{{other_lang}}`, `{{css_v}}`, `{{js_v}}`, `{{t:key}}` (escaped) and the
/// `vars` given.
fn render(template: &str, lang: Lang, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let value = match name {
            "lang" => lang.tag().to_string(),
            "other_lang" => lang.other().tag().to_string(),
            "css_v" => CSS_ETAG.trim_matches('"').to_string(),
            "js_v" => JS_ETAG.trim_matches('"').to_string(),
            n if n.starts_with("t:") => escape_html(text(lang, &n[2..])),
            n => vars
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The language's table as JSON that is safe inside `<script type="application/json">`.
fn i18n_json(lang: Lang) -> String {
    serde_json::to_string(strings(lang))
        .expect("a map of strings serialises")
        .replace('<', "\\u003c")
}

/// The status page. `auth`: a token is configured (the page shows "log out").
pub(super) fn index(lang: Lang, auth: bool, req: &HeaderMap) -> Response {
    let body = render(
        INDEX,
        lang,
        &[
            ("i18n", i18n_json(lang)),
            ("auth", if auth { "1" } else { "0" }.to_string()),
        ],
    );
    html(body, req)
}

/// The login form; `failed` after a refused token. `lang_param`: the `?lang=` to keep.
pub(super) fn login(
    lang: Lang,
    failed: bool,
    lang_param: Option<Lang>,
    req: &HeaderMap,
) -> Response {
    let body = render(
        LOGIN,
        lang,
        &[
            (
                "failed_hidden",
                if failed { "" } else { "hidden" }.to_string(),
            ),
            (
                "lang_param",
                lang_param.map(|l| l.tag().to_string()).unwrap_or_default(),
            ),
        ],
    );
    let mut resp = html(body, req);
    if failed {
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
    }
    resp
}

/// Headers every page and asset carries: no sniffing, no framing (the reconnect button must
/// not be clickjacked), nothing but our own scripts, styles and pictures.
fn hardening(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

fn not_modified(req: &HeaderMap, etag: &str) -> bool {
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// 200 with the body, or 304 when the client has it (`If-None-Match`).
fn cached(
    body: impl Into<axum::body::Body>,
    etag: &str,
    content_type: &'static str,
    cache_control: &'static str,
    vary_language: bool,
    req: &HeaderMap,
) -> Response {
    let fresh = not_modified(req, etag);
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body.into()).into_response()
    };
    let h = resp.headers_mut();
    if !fresh {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if vary_language {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    }
    hardening(h);
    resp
}

/// An HTML page: revalidated on every load (`no-cache`; the ETag makes that a 304).
fn html(body: String, req: &HeaderMap) -> Response {
    let etag = etag_of(body.as_bytes());
    cached(
        body,
        &etag,
        "text/html; charset=utf-8",
        "private, no-cache",
        true,
        req,
    )
}

/// `/app.js`: referenced as `/app.js?v=<etag>`, so a day's caching is safe across upgrades.
pub(super) fn app_js(req: &HeaderMap) -> Response {
    cached(
        APP_JS,
        &JS_ETAG,
        "text/javascript; charset=utf-8",
        "private, max-age=86400",
        false,
        req,
    )
}

/// `/app.css`, as `/app.js`.
pub(super) fn app_css(req: &HeaderMap) -> Response {
    cached(
        APP_CSS,
        &CSS_ETAG,
        "text/css; charset=utf-8",
        "private, max-age=86400",
        false,
        req,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_ranks_chinese_against_english() {
        let l = Lang::from_accept_language;
        assert_eq!(l("zh-CN,zh;q=0.9"), Lang::ZhCn);
        assert_eq!(l("zh-TW"), Lang::ZhCn);
        assert_eq!(l("en-US,en;q=0.9"), Lang::En);
        assert_eq!(l("en-US,en;q=0.9,zh-CN;q=0.8"), Lang::En);
        assert_eq!(l("en;q=0.5,zh-CN;q=0.8"), Lang::ZhCn);
        assert_eq!(l("zh-CN,en"), Lang::ZhCn);
        assert_eq!(l("en,zh-CN"), Lang::En);
        assert_eq!(l("fr-FR,de"), Lang::En);
        assert_eq!(l("fr-FR,zh;q=0.3"), Lang::ZhCn);
        assert_eq!(l("zh;q=0,en"), Lang::En);
        assert_eq!(l(""), Lang::En);
        assert_eq!(l("*"), Lang::En);
        assert_eq!(l("zh-Hans-CN ; q=0.9 , en ; q=0.8"), Lang::ZhCn);
    }

    #[test]
    fn the_query_overrides_the_header() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("zh-CN"));
        assert_eq!(Lang::negotiate(None, &h), Lang::ZhCn);
        assert_eq!(Lang::negotiate(Some("en"), &h), Lang::En);
        assert_eq!(Lang::negotiate(Some("bogus"), &h), Lang::ZhCn);
        assert_eq!(
            Lang::negotiate(Some("ZH-cn"), &HeaderMap::new()),
            Lang::ZhCn
        );
        assert_eq!(lang_query(Some("t=1&lang=zh-CN")), Some("zh-CN"));
        assert_eq!(lang_query(Some("t=1")), None);
    }

    #[test]
    fn both_tables_have_every_key_the_pages_and_script_use() {
        let [zh, en] = &*STRINGS;
        let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(zh),
            keys(en),
            "web/i18n.json: the same keys in both tables"
        );
        for (name, src) in [("index.html", INDEX), ("login.html", LOGIN)] {
            for part in src.split("{{t:").skip(1) {
                let key = &part[..part.find("}}").unwrap()];
                assert!(
                    en.contains_key(key),
                    "{name} uses {key:?}, not in web/i18n.json"
                );
            }
        }
        // Every t("literal") in the script.
        for (at, _) in APP_JS.match_indices("t(\"") {
            let before = APP_JS[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || before == '.' {
                continue; // split(", …
            }
            let part = &APP_JS[at + 3..];
            let key = &part[..part.find('"').unwrap()];
            if key.ends_with('_') {
                continue; // a prefix: checked below
            }
            assert!(
                en.contains_key(key),
                "app.js uses {key:?}, not in web/i18n.json"
            );
        }
        for state in ["starting", "idle", "live", "stopping", "failed"] {
            assert!(en.contains_key(&format!("state_{state}")), "{state}");
        }
        for phase in crate::rtmp::SenderPhase::ALL {
            assert!(
                en.contains_key(&format!("sender_{}", phase.as_str())),
                "{phase:?}"
            );
        }
        for alarm in ["silence", "clipping", "black", "frozen", "low_fps"] {
            assert!(en.contains_key(&format!("alarm_{alarm}")));
            assert!(INDEX.contains(&format!("data-alarm=\"{alarm}\"")));
        }
        for v in zh.values().chain(en.values()) {
            assert!(v.is_string(), "{v}");
        }
    }

    #[test]
    fn the_page_is_rendered_in_the_language_with_its_table() {
        let h = HeaderMap::new();
        let body = |r: Response| {
            let (parts, body) = r.into_parts();
            let bytes = futures_body(body);
            (parts, String::from_utf8(bytes).unwrap())
        };
        let (parts, zh) = body(index(Lang::ZhCn, true, &h));
        assert_eq!(parts.status, StatusCode::OK);
        assert!(
            zh.starts_with("<!doctype html>\n<html lang=\"zh-CN\">"),
            "{zh}"
        );
        assert!(zh.contains("音视频告警") && zh.contains("立即重连"));
        assert!(zh.contains("data-auth=\"1\""));
        assert!(!zh.contains("{{"), "unfilled placeholder");
        assert_eq!(parts.headers[header::VARY], "Accept-Language");
        let etag = parts.headers[header::ETAG].to_str().unwrap().to_string();

        // The same page again with its ETag: 304, no body.
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        let (parts, b) = body(index(Lang::ZhCn, true, &again));
        assert_eq!(parts.status, StatusCode::NOT_MODIFIED);
        assert!(b.is_empty());
        // English is another representation.
        let (parts, en) = body(index(Lang::En, false, &again));
        assert_eq!(parts.status, StatusCode::OK);
        assert!(en.contains("<html lang=\"en\">") && en.contains("Media alarms"));
        assert!(en.contains("data-auth=\"0\""));

        let (parts, login_zh) = body(login(Lang::ZhCn, true, Some(Lang::ZhCn), &h));
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
        assert!(login_zh.contains("令牌不正确") && !login_zh.contains("{{"));
        assert!(login_zh.contains("name=\"lang\" value=\"zh-CN\""));
        let (_, login_en) = body(login(Lang::En, false, None, &h));
        assert!(login_en.contains("data-testid=\"login-error\" hidden"));
    }

    #[test]
    fn assets_carry_etags_and_answer_304() {
        let r = app_js(&HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(app_js(&h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(app_css(&h).status(), StatusCode::OK);
    }

    #[test]
    fn html_escaping() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    /// The whole body of a response built in memory.
    fn futures_body(body: axum::body::Body) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap()
                .to_vec()
        })
    }
}
