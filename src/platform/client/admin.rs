//! The signed v3/v4 platform APIs behind `polypush channel …` (scheme 3, appId and
//! appSecret) and the signed viewer count: signed parameters in the URL or a form body, JSON
//! bodies unsigned, the v3/v4 envelope's `data` as the result.

use reqwest::{header, Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{AppCreds, PolyvClient, FORM_UTF8, JSON_UTF8};
use crate::platform::error::PlatformError;
use crate::platform::reply::{check_envelope, envelope_data};
use crate::platform::sign::{self, SignMethod};
use crate::platform::types::*;

impl PolyvClient {
    /// Query parameters of a signed v3/v4 request, `sign` appended.
    fn signed(&self, app: &AppCreds, ts: u64, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let ts = ts.to_string();
        let mut params: Vec<(String, String)> = vec![
            ("appId".into(), app.app_id.clone()),
            ("timestamp".into(), ts),
        ];
        if self.sign_method == SignMethod::Sha256 {
            params.push(("signatureMethod".into(), "SHA256".into()));
        }
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sign = sign::api_sign(app.secret.expose(), &params, self.sign_method);
        params.push(("sign".into(), sign));
        params
    }

    /// One signed v3/v4 request: the signed parameters in the URL (with a JSON body) or in a
    /// form body.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn signed_request(
        &self,
        http: &reqwest::Client,
        app: &AppCreds,
        method: &Method,
        url: &str,
        ts: u64,
        params: &[(&str, &str)],
        json_body: Option<&[u8]>,
        form: bool,
    ) -> RequestBuilder {
        let signed = self.signed(app, ts, params);
        let req = http.request(method.clone(), url);
        match (json_body, form) {
            (Some(body), _) => req
                .query(&signed)
                .header(header::CONTENT_TYPE, JSON_UTF8)
                .body(body.to_vec()),
            (None, true) => req.header(header::CONTENT_TYPE, FORM_UTF8).form(&signed),
            (None, false) => req.query(&signed),
        }
    }

    /// Sends a signed v3/v4 request and returns the envelope's `data`.
    pub(super) async fn signed_call<T: DeserializeOwned>(
        &self,
        api: &'static str,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        json_body: Option<Vec<u8>>,
        form: bool,
    ) -> Result<T, PlatformError> {
        let app = self.app()?;
        let url = self.endpoints.api_url(path);
        let answer = self
            .send(
                api,
                &url,
                self.retry,
                |http, ts| {
                    self.signed_request(
                        http,
                        app,
                        &method,
                        &url,
                        ts,
                        params,
                        json_body.as_deref(),
                        form,
                    )
                },
                |a| check_envelope(api, a),
            )
            .await?;
        envelope_data(api, &answer)
    }

    /// create-cpic-channel (v3).
    pub async fn create_channel(
        &self,
        req: &CreateChannel,
    ) -> Result<CreatedChannel, PlatformError> {
        let start = req.start_time_ms.map(|v| v.to_string()).unwrap_or_default();
        let end = req.end_time_ms.map(|v| v.to_string()).unwrap_or_default();
        let params = [
            ("name", req.name.as_str()),
            ("scene", req.scene.as_str()),
            (
                "channelObject",
                req.channel_object.map_or("", |o| o.as_str()),
            ),
            ("startTime", start.as_str()),
            ("endTime", end.as_str()),
        ];
        let params: Vec<(&str, &str)> = params.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        self.signed_call(
            "create channel",
            Method::POST,
            "/live/v3/channel/create-cpic-channel",
            &params,
            None,
            true,
        )
        .await
    }

    /// basic/update (v3): signed URL, unsigned JSON body.
    pub async fn update_channel(
        &self,
        channel_id: &str,
        settings: &UpdateSettings,
    ) -> Result<(), PlatformError> {
        let body = serde_json::to_vec(settings).map_err(|e| PlatformError::Validation {
            api: "update channel",
            message: e.to_string(),
        })?;
        self.signed_call::<Value>(
            "update channel",
            Method::POST,
            "/live/v3/channel/basic/update",
            &[("channelId", channel_id)],
            Some(body),
            false,
        )
        .await
        .map(|_| ())
    }

    /// mr/create (v4): signed URL, JSON body.
    pub async fn create_mr_channel(
        &self,
        req: &CreateMrChannel,
    ) -> Result<MrChannel, PlatformError> {
        let body = serde_json::to_vec(req).map_err(|e| PlatformError::Validation {
            api: "create MR channel",
            message: e.to_string(),
        })?;
        self.signed_call(
            "create MR channel",
            Method::POST,
            "/live/v4/channel/mr/create",
            &[],
            Some(body),
            false,
        )
        .await
    }

    /// get-push-url (v3): the channel's full RTMP URL, as an admin sees it.
    pub async fn push_url(&self, channel_id: &str) -> Result<PushAddress, PlatformError> {
        let url: String = self
            .signed_call(
                "get push url",
                Method::GET,
                "/live/v3/channel/stream/get-push-url",
                &[("channelId", channel_id)],
                None,
                false,
            )
            .await?;
        Ok(PushAddress::from_url(&url))
    }

    /// live-status list (v4).
    pub async fn live_status(
        &self,
        channel_ids: &[String],
    ) -> Result<Vec<LiveStatus>, PlatformError> {
        let ids = channel_ids.join(",");
        self.signed_call(
            "live status",
            Method::GET,
            "/live/v4/channel/live-status/list",
            &[("channelIds", ids.as_str())],
            None,
            false,
        )
        .await
    }
}
