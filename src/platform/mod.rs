//! The Polyv live platform: where each call goes, signing, typed requests and replies, errors
//! and the HTTP client.
//!
//! - `endpoints`: `[polyv.endpoints]`, every call's URL with the default hosts of Polyv's
//!   newest official clients (sources on each constant), the login fallback, DNS overrides.
//! - [`sign`]: the three signing schemes, pure, the timestamp an argument.
//! - `reply`: the reply shapes and the classification of refusals into [`PlatformError`].
//! - [`PolyvClient`]: the HTTP side: the program's TLS trust store ([`crate::tls`]),
//!   timeouts, bounded retries with jitter for transport errors, 5xx and 429 only, the login
//!   fallback, the viewer count's signed-then-unsigned order.
//! - [`types`]: the typed requests and replies.

mod client;
mod endpoints;
mod error;
mod reply;
mod settings;
pub mod sign;
pub mod types;

pub use client::{http_client_builder, PolyvClient, RetryPolicy};
pub use endpoints::{
    Endpoints, LegacyDefault, DEFAULT_API, DEFAULT_CHANNEL, DEFAULT_CHAT, DEFAULT_LOGIN,
    DEFAULT_LOGIN_FALLBACK,
};
pub(crate) use error::login_refusal_advice;
pub use error::{PlatformError, Skew};
pub use settings::{PolyvSettings, CREDENTIAL_APP_SECRET, CREDENTIAL_PASSWORD};
