//! The Polyv live platform: signing, typed requests and replies, errors and the HTTP client.
//!
//! The signing schemes in [`sign`] are pure and take the timestamp as an argument. The
//! [`client::PolyvClient`] owns the HTTP side: per-host base URLs (so it can point at the
//! simulator), timeouts, bounded retries with jitter for transport errors, 5xx and 429 only.

mod client;
mod error;
mod settings;
pub mod sign;
pub mod types;

pub use client::{PolyvClient, RetryPolicy};
pub use error::{PlatformError, Skew};
pub use settings::{Endpoints, PolyvSettings, CREDENTIAL_APP_SECRET, CREDENTIAL_PASSWORD};
