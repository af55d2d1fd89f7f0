//! The three Polyv signing schemes, as pure functions.
//!
//! Polyv signs with MD5 (and optionally SHA-256 for the platform APIs); every input is the
//! raw UTF-8 value, before URL encoding. These functions never see the network or the clock:
//! callers pass the timestamp, so the document vectors are plain unit tests.

use md5::{Digest, Md5};
use sha2::Sha256;

/// The fixed host string Polyv mixes into the push-client signatures.
const LOGIN_SALT: &str = "live.polyv.net";
/// The fixed key the channel-rename signature is wrapped in.
const RENAME_SALT: &str = "APPCHANNELSET";

fn md5_hex(input: &[u8]) -> String {
    hex::encode(Md5::digest(input))
}

/// `md5_hex_lower(password)`: what teacher_login sends as `passwd` (never the password itself).
pub fn login_passwd(password: &str) -> String {
    md5_hex(password.as_bytes())
}

/// Scheme 1 (teacher_login): `md5_lower("live.polyv.net" + channelId + passwd + timestamp)`.
pub fn login_sign(channel_id: &str, passwd_md5: &str, timestamp_ms: u64) -> String {
    md5_hex(format!("{LOGIN_SALT}{channel_id}{passwd_md5}{timestamp_ms}").as_bytes())
}

/// notify_stream2: `md5_lower("live.polyv.net" + channelId + timestamp)`.
pub fn notify_sign(channel_id: &str, timestamp_ms: u64) -> String {
    md5_hex(format!("{LOGIN_SALT}{channel_id}{timestamp_ms}").as_bytes())
}

/// Scheme 2 (channel rename): `md5_upper("APPCHANNELSET" + "channelId=" + id + "name=" + name + "APPCHANNELSET")`.
pub fn rename_sign(channel_id: &str, name: &str) -> String {
    md5_hex(format!("{RENAME_SALT}channelId={channel_id}name={name}{RENAME_SALT}").as_bytes())
        .to_ascii_uppercase()
}

/// Digest used by scheme 3. Polyv defaults to MD5; `signatureMethod=SHA256` selects SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignMethod {
    #[default]
    Md5,
    Sha256,
}

/// Scheme 3 (v3/v4 platform APIs): drop `sign` and empty values, sort keys by byte order,
/// concatenate `key + value`, then `upper(digest(secret + concatenation + secret))`.
///
/// Only parameters that travel in the URL or a form take part; a JSON body never does.
pub fn api_sign<K, V>(app_secret: &str, params: &[(K, V)], method: SignMethod) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut kept: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, v)| !v.is_empty() && *k != "sign")
        .collect();
    kept.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut plain = String::with_capacity(app_secret.len() * 2 + 64);
    plain.push_str(app_secret);
    for (k, v) in kept {
        plain.push_str(k);
        plain.push_str(v);
    }
    plain.push_str(app_secret);
    let digest = match method {
        SignMethod::Md5 => md5_hex(plain.as_bytes()),
        SignMethod::Sha256 => hex::encode(Sha256::digest(plain.as_bytes())),
    };
    digest.to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn teacher_login_vector() {
        let passwd = login_passwd("461666");
        assert_eq!(passwd, "aeb0e56d32d841cbc52b0ed18721167e");
        assert_eq!(
            login_sign("153884", &passwd, 1516327146366),
            "32046e6a4bab8d95de9e5bc6fc4630e7"
        );
    }

    #[test]
    fn rename_vector_utf8() {
        assert_eq!(
            rename_sign("153884", "小程序推流测试test"),
            "03395ED7F948A6F8CC63A5EEBA21CCB7"
        );
    }

    #[test]
    fn platform_api_vector() {
        let params = [
            ("appId", "g4rqgmmjuo"),
            ("channelIds", "2477096,2272655"),
            ("endDay", "2022-06-18"),
            ("startDay", "2022-05-20"),
            ("timestamp", "1660270926732"),
        ];
        assert_eq!(
            api_sign("fsq2k5weced1h8vui657xtdva66whf0g", &params, SignMethod::Md5),
            "0D2BDA2FD04D93A2B8832B91FD973C4D"
        );
    }

    #[test]
    fn sign_param_and_empty_values_are_ignored() {
        let base = [("appId", "a"), ("timestamp", "1")];
        let with_noise = [
            ("appId", "a"),
            ("sign", "XYZ"),
            ("empty", ""),
            ("timestamp", "1"),
        ];
        assert_eq!(
            api_sign("s", &base, SignMethod::Md5),
            api_sign("s", &with_noise, SignMethod::Md5)
        );
    }

    #[test]
    fn sha256_variant_is_upper_hex_of_same_construction() {
        let s = api_sign("k", &[("b", "2"), ("a", "1")], SignMethod::Sha256);
        assert_eq!(
            s,
            hex::encode(Sha256::digest(b"ka1b2k")).to_ascii_uppercase()
        );
        assert_eq!(s.len(), 64);
    }

    proptest! {
        #[test]
        fn order_does_not_matter(mut params in proptest::collection::vec(("[a-zA-Z]{1,8}", "\\PC{0,12}"), 0..8), seed in any::<u64>()) {
            params.sort();
            params.dedup_by(|a, b| a.0 == b.0);
            let expected = api_sign("secret", &params, SignMethod::Md5);
            // A deterministic shuffle driven by the seed.
            let mut shuffled = params.clone();
            let n = shuffled.len();
            let mut x = seed;
            for i in (1..n).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (x >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(api_sign("secret", &shuffled, SignMethod::Md5), expected);
        }

        #[test]
        fn empty_values_are_dropped(params in proptest::collection::btree_map("[a-z]{1,6}", "\\PC{1,10}", 0..6), extra in "[A-Z]{1,6}") {
            let v: Vec<(String, String)> = params.into_iter().collect();
            let mut with_empty = v.clone();
            with_empty.push((extra, String::new()));
            prop_assert_eq!(api_sign("s", &v, SignMethod::Md5), api_sign("s", &with_empty, SignMethod::Md5));
        }

        #[test]
        fn utf8_names_sign_over_raw_bytes(name in "\\PC{1,20}") {
            let expected = hex::encode(Md5::digest(format!("APPCHANNELSETchannelId=1name={name}APPCHANNELSET").as_bytes())).to_ascii_uppercase();
            prop_assert_eq!(rename_sign("1", &name), expected);
        }
    }
}
