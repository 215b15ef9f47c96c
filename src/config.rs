//! Typed configuration: defaults, then an optional TOML file, then the
//! environment. Every value is checked here, so that a bad one stops start-up
//! with one line naming the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::db::DbUrl;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
}

/// The keys a TOML file or the environment may set, with their defaults.
/// `None` means "no default; derived or optional".
const KEYS: &[(&str, Option<&str>)] = &[
    ("DATABASE_URL", Some("sqlite://phonekey.db")),
    ("PHONEKEY_LISTEN", Some("127.0.0.1:8080")),
    ("PHONEKEY_ISSUER", None),
    ("PHONEKEY_SECRET_KEY", None),
    ("PHONEKEY_DEFAULT_REGION", None),
    ("PHONEKEY_SMS_PROVIDER", Some("console")),
    ("PHONEKEY_SMS_WEBHOOK_URL", None),
    ("PHONEKEY_SMS_TIMEOUT", Some("10")),
    ("PHONEKEY_SMS_TEMPLATE", None),
    ("PHONEKEY_TWILIO_ACCOUNT_SID", None),
    ("PHONEKEY_TWILIO_AUTH_TOKEN", None),
    ("PHONEKEY_TWILIO_FROM", None),
    ("PHONEKEY_TWILIO_API_BASE", Some("https://api.twilio.com")),
    ("PHONEKEY_OTP_AUTO_CREATE_USERS", Some("false")),
    ("PHONEKEY_ACCESS_TOKEN_TTL", Some("3600")),
    ("PHONEKEY_REFRESH_TOKEN_TTL", Some("1209600")),
    ("PHONEKEY_TOKEN_AUDIENCE", None),
    ("PHONEKEY_TOKEN_ALG", Some("EdDSA")),
    ("PHONEKEY_OTP_CODE_LENGTH", Some("6")),
    ("PHONEKEY_OTP_CODE_TTL", Some("300")),
    ("PHONEKEY_OTP_MAX_ATTEMPTS", Some("5")),
    ("PHONEKEY_OTP_RESEND_SECONDS", Some("30")),
    ("PHONEKEY_OTP_PER_PHONE_HOUR", Some("5")),
    ("PHONEKEY_OTP_PER_IP_HOUR", Some("20")),
    ("PHONEKEY_TICKET_TTL", Some("600")),
    ("PHONEKEY_SESSION_TTL", Some("43200")),
    ("PHONEKEY_TRUSTED_PROXIES", None),
    ("PHONEKEY_DB_POOL_SIZE", Some("16")),
    ("PHONEKEY_DB_TIMEOUT", Some("5")),
    ("PHONEKEY_REQUEST_TIMEOUT", Some("15")),
    ("PHONEKEY_WORKERS", None),
];

/// The default SMS text; `{code}` and `{host}` are filled in. The last line is
/// the WebOTP / iOS one-time-code format, so that phones offer to autofill.
pub const DEFAULT_SMS_TEMPLATE: &str =
    "Your {host} code is {code}. Do not share it.\n\n@{host} #{code}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsProviderKind {
    Console,
    Webhook,
    Twilio,
}

#[derive(Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    /// A phone number in E.164 or a Messaging Service SID (MG…).
    pub from: String,
    pub api_base: String,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"***")
            .field("from", &self.from)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub provider: SmsProviderKind,
    pub webhook_url: Option<url::Url>,
    pub twilio: Option<TwilioConfig>,
    pub timeout: Duration,
    pub template: String,
}

#[derive(Debug, Clone)]
pub struct OtpConfig {
    pub code_length: usize,
    pub code_ttl: i64,
    pub max_attempts: i32,
    /// 0 turns the cooldown off; likewise 0 turns an hourly limit off.
    pub resend_seconds: i64,
    pub per_phone_hour: i32,
    pub per_ip_hour: i32,
    pub ticket_ttl: i64,
    pub auto_create_users: bool,
}

/// The access tokens' signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAlg {
    EdDsa,
    Rs256,
}

impl TokenAlg {
    pub fn name(self) -> &'static str {
        match self {
            TokenAlg::EdDsa => "EdDSA",
            TokenAlg::Rs256 => "RS256",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    pub audience: String,
    pub alg: TokenAlg,
}

#[derive(Clone)]
pub struct Config {
    pub database: DbUrl,
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub issuer: String,
    pub secret_key: Option<String>,
    pub default_region: Option<phonenumber::country::Id>,
    pub sms: SmsConfig,
    pub otp: OtpConfig,
    pub tokens: TokenConfig,
    pub trusted_proxies: Vec<IpNet>,
    /// Seconds a browser stays logged in on the authorization pages.
    pub session_ttl: i64,
    pub db_pool_size: u32,
    pub db_timeout: Duration,
    /// The longest a request waits for its database work in all: bounds the
    /// wait on a server that stops answering (the MySQL client library
    /// has no read timeout that diesel sets).
    pub request_timeout: Duration,
    pub workers: Option<usize>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database.backend)
            .field("listen", &self.listen)
            .field("issuer", &self.issuer)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults, overlaid by the TOML file (if any), overlaid by the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some(path) = file {
            values.extend(read_toml(path)?);
        }
        for (key, _) in KEYS {
            if let Ok(value) = std::env::var(key) {
                values.insert(key.to_string(), value);
            }
        }
        Config::from_values(values)
    }

    /// Builds a config from explicit `KEY = value` pairs over the defaults (for tests and tools).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        let mut values = BTreeMap::new();
        for (k, v) in pairs {
            if !KEYS.iter().any(|(key, _)| *key == k) {
                return Err(invalid(k, "unknown setting"));
            }
            values.insert(k.to_string(), v.to_string());
        }
        Config::from_values(values)
    }

    fn from_values(mut values: BTreeMap<String, String>) -> Result<Config, ConfigError> {
        for (key, default) in KEYS {
            if let Some(default) = default {
                values
                    .entry(key.to_string())
                    .or_insert_with(|| default.to_string());
            }
        }
        let get = |key: &str| values.get(key).map(|s| s.trim()).filter(|s| !s.is_empty());
        let req = |key: &str| get(key).ok_or_else(|| invalid(key, "must not be empty"));

        let database =
            DbUrl::parse(req("DATABASE_URL")?).map_err(|m| invalid("DATABASE_URL", &m))?;
        let listen: SocketAddr = req("PHONEKEY_LISTEN")?
            .parse()
            .map_err(|_| invalid("PHONEKEY_LISTEN", "must be an address like 127.0.0.1:8080"))?;
        let issuer = match get("PHONEKEY_ISSUER") {
            Some(issuer) => {
                let url = url::Url::parse(issuer)
                    .map_err(|e| invalid("PHONEKEY_ISSUER", &format!("not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(invalid(
                        "PHONEKEY_ISSUER",
                        "must be an http(s) URL with a host",
                    ));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid(
                        "PHONEKEY_ISSUER",
                        "must not have a query or fragment",
                    ));
                }
                issuer.trim_end_matches('/').to_string()
            }
            None => format!("http://{listen}"),
        };
        let secret_key = match get("PHONEKEY_SECRET_KEY") {
            Some(key) if key.len() < 32 => {
                return Err(invalid(
                    "PHONEKEY_SECRET_KEY",
                    "must be at least 32 characters",
                ))
            }
            other => other.map(str::to_string),
        };
        let default_region = match get("PHONEKEY_DEFAULT_REGION") {
            Some(code) => Some(crate::phone::parse_region(code).ok_or_else(|| {
                invalid(
                    "PHONEKEY_DEFAULT_REGION",
                    "must be an ISO 3166 alpha-2 region such as IN",
                )
            })?),
            None => None,
        };

        let provider = match req("PHONEKEY_SMS_PROVIDER")? {
            "console" => SmsProviderKind::Console,
            "webhook" => SmsProviderKind::Webhook,
            "twilio" => SmsProviderKind::Twilio,
            other => {
                return Err(invalid(
                    "PHONEKEY_SMS_PROVIDER",
                    &format!("unknown provider {other:?}; use console, webhook or twilio"),
                ))
            }
        };
        let webhook_url = match get("PHONEKEY_SMS_WEBHOOK_URL") {
            Some(u) => {
                let url = url::Url::parse(u)
                    .map_err(|e| invalid("PHONEKEY_SMS_WEBHOOK_URL", &format!("not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid("PHONEKEY_SMS_WEBHOOK_URL", "must be http or https"));
                }
                Some(url)
            }
            None => None,
        };
        if provider == SmsProviderKind::Webhook && webhook_url.is_none() {
            return Err(invalid(
                "PHONEKEY_SMS_WEBHOOK_URL",
                "is required when PHONEKEY_SMS_PROVIDER=webhook",
            ));
        }
        let twilio = if provider == SmsProviderKind::Twilio {
            let need = |key: &str| {
                get(key)
                    .map(str::to_string)
                    .ok_or_else(|| invalid(key, "is required when PHONEKEY_SMS_PROVIDER=twilio"))
            };
            let api_base = need("PHONEKEY_TWILIO_API_BASE")?;
            if url::Url::parse(&api_base).is_err() {
                return Err(invalid("PHONEKEY_TWILIO_API_BASE", "not a URL"));
            }
            Some(TwilioConfig {
                account_sid: need("PHONEKEY_TWILIO_ACCOUNT_SID")?,
                auth_token: need("PHONEKEY_TWILIO_AUTH_TOKEN")?,
                from: need("PHONEKEY_TWILIO_FROM")?,
                api_base,
            })
        } else {
            None
        };
        let template = get("PHONEKEY_SMS_TEMPLATE")
            .map(|t| t.replace("\\n", "\n"))
            .unwrap_or_else(|| DEFAULT_SMS_TEMPLATE.to_string());
        if !template.contains("{code}") {
            return Err(invalid("PHONEKEY_SMS_TEMPLATE", "must contain {code}"));
        }
        let sms = SmsConfig {
            provider,
            webhook_url,
            twilio,
            timeout: Duration::from_secs(number(&values, "PHONEKEY_SMS_TIMEOUT", 1, 120)? as u64),
            template,
        };

        let otp = OtpConfig {
            code_length: number(&values, "PHONEKEY_OTP_CODE_LENGTH", 4, 10)? as usize,
            code_ttl: number(&values, "PHONEKEY_OTP_CODE_TTL", 30, 86_400)?,
            max_attempts: number(&values, "PHONEKEY_OTP_MAX_ATTEMPTS", 1, 100)? as i32,
            resend_seconds: number(&values, "PHONEKEY_OTP_RESEND_SECONDS", 0, 86_400)?,
            per_phone_hour: number(&values, "PHONEKEY_OTP_PER_PHONE_HOUR", 0, 1_000_000_000)?
                as i32,
            per_ip_hour: number(&values, "PHONEKEY_OTP_PER_IP_HOUR", 0, 1_000_000_000)? as i32,
            ticket_ttl: number(&values, "PHONEKEY_TICKET_TTL", 30, 86_400)?,
            auto_create_users: boolean(&values, "PHONEKEY_OTP_AUTO_CREATE_USERS")?,
        };
        let tokens = TokenConfig {
            access_ttl: number(&values, "PHONEKEY_ACCESS_TOKEN_TTL", 30, 86_400 * 7)?,
            refresh_ttl: number(&values, "PHONEKEY_REFRESH_TOKEN_TTL", 60, 86_400 * 3650)?,
            audience: get("PHONEKEY_TOKEN_AUDIENCE")
                .map(str::to_string)
                .unwrap_or_else(|| issuer.clone()),
            alg: match req("PHONEKEY_TOKEN_ALG")? {
                "EdDSA" => TokenAlg::EdDsa,
                "RS256" => TokenAlg::Rs256,
                other => {
                    return Err(invalid(
                        "PHONEKEY_TOKEN_ALG",
                        &format!("{other:?} is not EdDSA or RS256"),
                    ))
                }
            },
        };
        let trusted_proxies = match get("PHONEKEY_TRUSTED_PROXIES") {
            Some(list) => list
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            invalid(
                                "PHONEKEY_TRUSTED_PROXIES",
                                &format!("{s:?} is not an IP address or CIDR"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let workers = match get("PHONEKEY_WORKERS") {
            Some(_) => Some(number(&values, "PHONEKEY_WORKERS", 1, 256)? as usize),
            None => None,
        };
        Ok(Config {
            database,
            listen,
            issuer,
            secret_key,
            default_region,
            sms,
            otp,
            tokens,
            trusted_proxies,
            session_ttl: number(&values, "PHONEKEY_SESSION_TTL", 60, 31_536_000)?,
            db_pool_size: number(&values, "PHONEKEY_DB_POOL_SIZE", 1, 1000)? as u32,
            db_timeout: Duration::from_secs(number(&values, "PHONEKEY_DB_TIMEOUT", 1, 600)? as u64),
            request_timeout: Duration::from_secs(number(
                &values,
                "PHONEKEY_REQUEST_TIMEOUT",
                1,
                3600,
            )? as u64),
            workers,
        })
    }

    /// Whether browsers reach us over https: then cookies are `Secure`.
    pub fn https(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    /// The issuer's host, as the SMS autofill line names it.
    pub fn issuer_host(&self) -> String {
        url::Url::parse(&self.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".to_string())
    }
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn number(
    values: &BTreeMap<String, String>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<i64, ConfigError> {
    let raw = values.get(key).map(|s| s.trim()).unwrap_or("");
    let n: i64 = raw
        .parse()
        .map_err(|_| invalid(key, &format!("{raw:?} is not a whole number")))?;
    if n < min || n > max {
        return Err(invalid(
            key,
            &format!("must be between {min} and {max}, got {n}"),
        ));
    }
    Ok(n)
}

fn boolean(values: &BTreeMap<String, String>, key: &str) -> Result<bool, ConfigError> {
    match values
        .get(key)
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") | None => Ok(false),
        Some(other) => Err(invalid(key, &format!("{other:?} is not true or false"))),
    }
}

fn read_toml(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_err = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_err(e.message().to_string()))?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        if !KEYS.iter().any(|(k, _)| *k == key) {
            return Err(file_err(format!("unknown setting {key:?}")));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => return Err(file_err(format!("{key}: unsupported value {other}"))),
        };
        values.insert(key, value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work() {
        let c = Config::from_pairs([]).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.tokens.audience, c.issuer);
        assert_eq!(c.otp.code_length, 6);
        assert_eq!(c.otp.per_ip_hour, 20);
        assert_eq!(c.sms.provider, SmsProviderKind::Console);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            ("DATABASE_URL", "postgres://x"),
            ("PHONEKEY_SMS_PROVIDER", "carrier-pigeon"),
            ("PHONEKEY_OTP_CODE_LENGTH", "3"),
            ("PHONEKEY_LISTEN", "nowhere"),
            ("PHONEKEY_TRUSTED_PROXIES", "10.0.0.0/8,bogus"),
            ("PHONEKEY_DEFAULT_REGION", "XX1"),
            ("PHONEKEY_TOKEN_ALG", "HS256"),
        ];
        for (key, value) in cases {
            let err = Config::from_pairs([(key, value)]).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn webhook_needs_url() {
        let err = Config::from_pairs([("PHONEKEY_SMS_PROVIDER", "webhook")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("PHONEKEY_SMS_WEBHOOK_URL"), "{err}");
    }
}
