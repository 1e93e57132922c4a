//! The configuration: one JSON document, kept in a Secrets Manager secret
//! (or, for the CLI, a file), validated when it loads.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::contact_point_consent::ContactPointConsent;
use crate::mapping::{is_logical_name, Mapping, RawMapping};
use crate::secret::Secret;

pub(crate) const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub(crate) const DEFAULT_DIDOMI_API_URL: &str = "https://api.didomi.io/v1";
pub(crate) const DEFAULT_CONTACT_KEY: &str = "emailaddress1";
pub(crate) const DEFAULT_REGULATION: &str = "gdpr";
/// Shorter keys could be guessed by anyone who finds the endpoint.
pub(crate) const MIN_WEBHOOK_KEY_CHARS: usize = 16;

#[derive(Debug, Clone)]
pub struct Config {
    pub dataverse: DataverseSettings,
    pub upsert_mode: bool,
    pub contact_key: String,
    pub mappings: Vec<Mapping>,
    pub didomi: DidomiSettings,
    pub didomi_webhook: DidomiWebhookAuth,
    pub dynamics_webhook_key: Option<Secret>,
    /// A date-time contact column holding the time of the last Didomi
    /// change applied: the stale-event guard.
    pub sync_timestamp_column: Option<String>,
    /// The key of the pseudonyms that stand for user ids in logs:
    /// `log_pseudonym_key`, else derived from `client_secret`.
    pub log_pseudonym_key: Secret,
    /// Consent records for Customer Insights – Journeys, when configured.
    pub contact_point_consent: Option<ContactPointConsent>,
}

/// Where and as whom Dataverse is reached: the app registration's client
/// credentials in an Entra ID tenant, and the environment. The secret keeps
/// these fields at its top level (`client_id`, `tenant_id`, …).
#[derive(Debug, Clone)]
pub struct DataverseSettings {
    pub client_id: String,
    pub client_secret: Secret,
    pub tenant_id: String,
    /// The environment URL without a trailing slash, e.g. `https://contoso.crm4.dynamics.com`.
    pub server_instance: String,
    pub authority_host: String,
}

#[derive(Debug, Clone)]
pub struct DidomiSettings {
    pub organization_id: String,
    pub api_key: Secret,
    pub api_secret: Secret,
    pub regulation: String,
    /// `didomi_api_url` at the secret's top level.
    pub api_url: String,
}

/// How deliveries to `didomi-to-dynamics` prove they come from Didomi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DidomiWebhookAuth {
    pub mode: WebhookAuthMode,
    pub client_ids: Vec<String>,
    pub allowed_source_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookAuthMode {
    /// API Gateway's JWT authorizer validated a token; its `client_id` claim must be allowed.
    #[default]
    Jwt,
    /// No check: for local runs only.
    None,
}

/// A configuration that cannot be used, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is not valid JSON: {0}")]
    NotJson(String),
    #[error("configuration field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error("environment variable `{name}` {reason}")]
    Environment { name: &'static str, reason: String },
    #[error("could not read the configuration secret `{secret_id}`: {reason}")]
    Unreadable { secret_id: String, reason: String },
    #[error("could not write the configuration back to `{secret_id}`: {reason}")]
    Unwritable { secret_id: String, reason: String },
}

const SECRET_FIELDS: [&str; 5] = [
    "client_secret",
    "api_key",
    "api_secret",
    "dynamics_webhook_key",
    "log_pseudonym_key",
];

/// Labels the pseudonym key derived from `client_secret`, so that it is
/// never the client secret itself.
const DERIVED_PSEUDONYM_KEY_LABEL: &[u8] = b"consent-sync log pseudonym key v1";

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        // serde quotes the offending value whole: at most 64 characters.
        reason: crate::input::cut_quoted(&reason.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    client_id: Option<String>,
    client_secret: Option<Secret>,
    tenant_id: Option<String>,
    server_instance: Option<String>,
    #[serde(default)]
    upsert_mode: bool,
    contact_key: Option<String>,
    mappings: Option<Vec<Value>>,
    didomi: Option<RawDidomi>,
    didomi_webhook: Option<RawDidomiWebhook>,
    dynamics_webhook_key: Option<Secret>,
    authority_host: Option<String>,
    didomi_api_url: Option<String>,
    log_pseudonym_key: Option<Secret>,
    sync_timestamp_column: Option<String>,
    contact_point_consent: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDidomi {
    organization_id: Option<String>,
    api_key: Option<Secret>,
    api_secret: Option<Secret>,
    regulation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDidomiWebhook {
    #[serde(default)]
    auth: WebhookAuthMode,
    #[serde(default)]
    client_ids: Vec<String>,
    #[serde(default)]
    allowed_source_ips: Vec<String>,
}

fn required(field: &str, value: Option<String>) -> Result<String, ConfigError> {
    match value {
        None => Err(invalid(field, "is required")),
        Some(v) if v.trim().is_empty() => Err(invalid(field, "is empty")),
        Some(v) => Ok(v.trim().to_string()),
    }
}

fn required_secret(field: &str, value: Option<Secret>) -> Result<Secret, ConfigError> {
    match value {
        None => Err(invalid(field, "is required")),
        Some(v) if v.is_empty() => Err(invalid(field, "is empty")),
        Some(v) => Ok(v),
    }
}

/// Checks a base URL: `https`, or `http` on a loopback host only (local
/// simulators), no query or fragment. Returns it without a trailing slash.
pub(crate) fn base_url(field: &str, value: &str) -> Result<String, ConfigError> {
    let url =
        url::Url::parse(value.trim()).map_err(|e| invalid(field, format!("is not a URL ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(invalid(field, "has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(invalid(
                field,
                "must use https (http is allowed on a loopback host only)",
            ))
        }
        other => return Err(invalid(field, format!("must use https, not {other}"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(field, "must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(field, "must not carry credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl DataverseSettings {
    fn from_raw(raw: &mut RawConfig) -> Result<Self, ConfigError> {
        Ok(DataverseSettings {
            client_id: required("client_id", raw.client_id.take())?,
            client_secret: required_secret("client_secret", raw.client_secret.take())?,
            tenant_id: tenant_id(raw.tenant_id.take())?,
            server_instance: server_instance(raw.server_instance.take())?,
            authority_host: base_url(
                "authority_host",
                raw.authority_host
                    .as_deref()
                    .unwrap_or(DEFAULT_AUTHORITY_HOST),
            )?,
        })
    }
}

fn tenant_id(raw: Option<String>) -> Result<String, ConfigError> {
    let tenant_id = required("tenant_id", raw)?;
    if !tenant_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(invalid("tenant_id", "must be a tenant GUID or domain name"));
    }
    Ok(tenant_id)
}

fn server_instance(raw: Option<String>) -> Result<String, ConfigError> {
    let server_instance = base_url("server_instance", &required("server_instance", raw)?)?;
    if server_instance.matches('/').count() > 2 {
        return Err(invalid(
            "server_instance",
            "must be the environment's root URL, e.g. https://contoso.crm4.dynamics.com (no path)",
        ));
    }
    Ok(server_instance)
}

fn contact_key(raw: Option<String>) -> Result<String, ConfigError> {
    let contact_key = raw.unwrap_or_else(|| DEFAULT_CONTACT_KEY.to_string());
    if !is_logical_name(&contact_key) {
        return Err(invalid(
            "contact_key",
            "must be a contact column's logical name, e.g. emailaddress1",
        ));
    }
    Ok(contact_key)
}

/// Whether a configuration without mappings may load: only for `init`,
/// which is there to build them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MappingsRule {
    Required,
    MayBeEmpty,
}

/// The contact column mappings: required unless consent records are
/// configured (or `init` builds them); each valid, none on the key, no
/// column twice.
fn mappings(
    raw: Option<Vec<Value>>,
    contact_key: &str,
    consent_records: bool,
    rule: MappingsRule,
) -> Result<Vec<Mapping>, ConfigError> {
    let optional = consent_records || rule == MappingsRule::MayBeEmpty;
    let raw_mappings = match raw {
        None if optional => Vec::new(),
        None => {
            return Err(invalid(
                "mappings",
                "is required (or a contact_point_consent section)",
            ))
        }
        Some(m) if m.is_empty() && !optional => {
            return Err(invalid("mappings", "needs at least one mapping"))
        }
        Some(m) => m,
    };
    let mut mappings: Vec<Mapping> = Vec::with_capacity(raw_mappings.len());
    for (index, value) in raw_mappings.into_iter().enumerate() {
        let field = format!("mappings[{index}]");
        let raw: RawMapping = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                field.clone()
            } else {
                format!("{field}.{path}")
            };
            invalid(field, e.into_inner().to_string())
        })?;
        let mapping = Mapping::try_from(raw).map_err(|e| invalid(&field, e.0))?;
        if mapping.column == contact_key {
            return Err(invalid(
                &field,
                format!(
                    "column `{}` is the contact_key, which consent-sync never overwrites",
                    mapping.column
                ),
            ));
        }
        if mappings.iter().any(|m| m.column == mapping.column) {
            return Err(invalid(
                &field,
                format!("column `{}` is already mapped", mapping.column),
            ));
        }
        mappings.push(mapping);
    }
    Ok(mappings)
}

impl DidomiSettings {
    fn from_raw(raw: Option<RawDidomi>, api_url: Option<&str>) -> Result<Self, ConfigError> {
        let didomi = raw.ok_or_else(|| invalid("didomi", "is required"))?;
        Ok(DidomiSettings {
            organization_id: required("didomi.organization_id", didomi.organization_id)?,
            api_key: required_secret("didomi.api_key", didomi.api_key)?,
            api_secret: required_secret("didomi.api_secret", didomi.api_secret)?,
            regulation: match didomi.regulation {
                None => DEFAULT_REGULATION.to_string(),
                Some(r) => required("didomi.regulation", Some(r))?.to_ascii_lowercase(),
            },
            api_url: base_url("didomi_api_url", api_url.unwrap_or(DEFAULT_DIDOMI_API_URL))?,
        })
    }
}

impl DidomiWebhookAuth {
    fn from_raw(raw: Option<RawDidomiWebhook>) -> Result<Self, ConfigError> {
        let webhook = raw.unwrap_or(RawDidomiWebhook {
            auth: WebhookAuthMode::Jwt,
            client_ids: vec![],
            allowed_source_ips: vec![],
        });
        let allowed_source_ips = webhook
            .allowed_source_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                ip.trim().parse::<IpAddr>().map_err(|_| {
                    invalid(
                        format!("didomi_webhook.allowed_source_ips[{i}]"),
                        "is not an IP address",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(DidomiWebhookAuth {
            mode: webhook.auth,
            client_ids: webhook
                .client_ids
                .into_iter()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            allowed_source_ips,
        })
    }
}

/// The stale-event guard's column: a column of its own.
fn sync_timestamp_column(
    raw: Option<String>,
    contact_key: &str,
    mappings: &[Mapping],
) -> Result<Option<String>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(column) if !is_logical_name(&column) => Err(invalid(
            "sync_timestamp_column",
            "must be a contact column's logical name, e.g. new_consentsyncedon",
        )),
        Some(column) if column == contact_key || mappings.iter().any(|m| m.column == column) => {
            Err(invalid(
                "sync_timestamp_column",
                format!("column `{column}` is already the contact_key or a mapped column"),
            ))
        }
        Some(column) => Ok(Some(column)),
    }
}

/// `log_pseudonym_key`, else a key derived from `client_secret` (never the
/// secret itself).
fn log_pseudonym_key(raw: Option<Secret>, client_secret: &Secret) -> Result<Secret, ConfigError> {
    match raw {
        Some(key) if key.expose().trim().chars().count() < MIN_WEBHOOK_KEY_CHARS => Err(invalid(
            "log_pseudonym_key",
            format!("must be at least {MIN_WEBHOOK_KEY_CHARS} characters long"),
        )),
        Some(key) => Ok(key),
        None => {
            let derived = crate::logging::hmac_sha256(
                client_secret.expose().as_bytes(),
                DERIVED_PSEUDONYM_KEY_LABEL,
            );
            Ok(Secret::new(
                derived
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            ))
        }
    }
}

impl Config {
    /// Parses and validates the secret's JSON. Errors name the field, and for
    /// a mapping its index, e.g. `mappings[2]`.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, MappingsRule::Required)
    }

    /// The same, except that `mappings` may be absent or empty: the
    /// configuration `consent-sync init` starts from. Nothing else loads one.
    pub fn from_json_for_setup(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, MappingsRule::MayBeEmpty)
    }

    fn parse(text: &str, rule: MappingsRule) -> Result<Config, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() || field == "." {
                ConfigError::NotJson(strip_position(&inner))
            } else if SECRET_FIELDS.iter().any(|s| field.ends_with(s)) {
                // serde quotes the offending value; for these fields it may be the secret.
                invalid(field, "must be a non-empty string")
            } else {
                invalid(field, strip_position(&inner))
            }
        })?;
        Self::from_raw(raw, rule)
    }

    /// The whole configuration from its sections, each validated where it
    /// is defined; then the rules that span sections.
    fn from_raw(mut raw: RawConfig, rule: MappingsRule) -> Result<Config, ConfigError> {
        let dataverse = DataverseSettings::from_raw(&mut raw)?;
        let contact_key = contact_key(raw.contact_key)?;
        let contact_point_consent = raw
            .contact_point_consent
            .map(|section| {
                ContactPointConsent::from_value(section).map_err(|e| invalid(e.field, e.reason))
            })
            .transpose()?;
        let mappings = mappings(
            raw.mappings,
            &contact_key,
            contact_point_consent.is_some(),
            rule,
        )?;
        let didomi = DidomiSettings::from_raw(raw.didomi, raw.didomi_api_url.as_deref())?;
        let didomi_webhook = DidomiWebhookAuth::from_raw(raw.didomi_webhook)?;
        let dynamics_webhook_key = match raw.dynamics_webhook_key {
            Some(key) if key.is_empty() => return Err(invalid("dynamics_webhook_key", "is empty")),
            other => other,
        };
        let sync_timestamp_column =
            sync_timestamp_column(raw.sync_timestamp_column, &contact_key, &mappings)?;
        let log_pseudonym_key = log_pseudonym_key(raw.log_pseudonym_key, &dataverse.client_secret)?;
        Ok(Config {
            dataverse,
            upsert_mode: raw.upsert_mode,
            contact_key,
            mappings,
            didomi,
            didomi_webhook,
            dynamics_webhook_key,
            log_pseudonym_key,
            sync_timestamp_column,
            contact_point_consent,
        })
    }

    /// The pseudonyms that stand for user ids in logs.
    pub fn pseudonyms(&self) -> crate::logging::Pseudonyms<'_> {
        crate::logging::Pseudonyms::new(&self.log_pseudonym_key)
    }

    /// What `didomi-to-dynamics` needs beyond the common fields: with JWT
    /// authentication, at least one allowed client id, else every delivery
    /// would be refused. Checked by that function only, so that a
    /// configuration for the other direction alone still loads.
    pub fn check_didomi_webhook(&self) -> Result<(), ConfigError> {
        if self.didomi_webhook.mode == WebhookAuthMode::Jwt
            && self.didomi_webhook.client_ids.is_empty()
        {
            return Err(invalid(
                "didomi_webhook.client_ids",
                "needs at least one client id when auth is \"jwt\" (the default; use auth \"none\" only for local runs)",
            ));
        }
        Ok(())
    }

    /// What `dynamics-to-didomi` and webhook registration need: the key that
    /// Dataverse sends in `x-consent-sync-key`, long enough not to be guessed.
    pub fn dynamics_webhook_key(&self) -> Result<&Secret, ConfigError> {
        let key = self.dynamics_webhook_key.as_ref().ok_or_else(|| {
            invalid(
                "dynamics_webhook_key",
                "is required for the Dynamics → Didomi flow: set a long random value (e.g. `openssl rand -hex 32`)",
            )
        })?;
        let key_text = key.expose().trim();
        if key_text.chars().count() < MIN_WEBHOOK_KEY_CHARS {
            return Err(invalid(
                "dynamics_webhook_key",
                format!("must be at least {MIN_WEBHOOK_KEY_CHARS} characters long"),
            ));
        }
        if key_text.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "dynamics_webhook_key",
                "must not contain control characters (it travels in an HTTP header)",
            ));
        }
        Ok(key)
    }

    /// The columns mapped towards Didomi (`direction` `both` or `to_didomi`).
    pub(crate) fn columns_to_didomi(&self) -> impl Iterator<Item = &str> {
        self.mappings
            .iter()
            .filter(|m| m.direction.to_didomi())
            .map(|m| m.column.as_str())
    }

    /// The columns to read from a contact: the key and every column mapped
    /// towards Dynamics.
    pub fn columns_to_dynamics(&self) -> impl Iterator<Item = &str> {
        self.mappings
            .iter()
            .filter(|m| m.direction.to_dynamics())
            .map(|m| m.column.as_str())
    }
}

/// serde_json appends "at line 1 column 42"; the field path already says where.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    // serde quotes the offending value: at most 64 characters of it.
    let text = crate::input::cut_quoted(&text);
    match text.rfind(" at line ") {
        Some(i) if !error.is_syntax() && !error.is_eof() => text[..i].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "client_id": "00000000-0000-0000-0000-0000000000c1",
            "client_secret": "s3cret",
            "tenant_id": "contoso.onmicrosoft.com",
            "server_instance": "https://contoso.crm4.dynamics.com/",
            "mappings": [{"column": "donotbulkemail", "purpose": "marketing", "invert": true}],
            "didomi": {"organization_id": "org", "api_key": "k", "api_secret": "s"},
            "didomi_webhook": {"auth": "jwt", "client_ids": ["didomi"]}
        })
    }

    fn error_of(value: Value) -> String {
        Config::from_json(&value.to_string())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_minimal_configuration_gets_the_documented_defaults() {
        let config = Config::from_json(&valid().to_string()).unwrap();
        assert_eq!(
            config.dataverse.server_instance,
            "https://contoso.crm4.dynamics.com"
        );
        assert_eq!(config.contact_key, "emailaddress1");
        assert!(!config.upsert_mode);
        assert_eq!(config.didomi.regulation, "gdpr");
        assert_eq!(
            config.dataverse.authority_host,
            "https://login.microsoftonline.com"
        );
        assert_eq!(config.didomi.api_url, "https://api.didomi.io/v1");
        assert_eq!(config.didomi_webhook.mode, WebhookAuthMode::Jwt);
    }

    #[test]
    fn consent_records_may_stand_alone_or_beside_mappings() {
        let section =
            json!({"purposes": [{"purpose": "newsletter", "consent_purpose": "Newsletter"}]});
        let mut alone = valid();
        alone.as_object_mut().unwrap().remove("mappings");
        alone["contact_point_consent"] = section.clone();
        let config = Config::from_json(&alone.to_string()).unwrap();
        assert!(config.mappings.is_empty());
        assert_eq!(config.contact_point_consent.unwrap().purposes.len(), 1);
        let mut beside = valid();
        beside["contact_point_consent"] = section;
        assert!(Config::from_json(&beside.to_string()).is_ok());
        let mut bad = valid();
        bad["contact_point_consent"] = json!({"purposes": [{"purpose": "newsletter"}]});
        assert!(
            error_of(bad).starts_with("configuration field `contact_point_consent.purposes[0]`")
        );
    }

    #[test]
    fn only_setup_loads_a_configuration_without_mappings() {
        for mappings in [None, Some(json!([]))] {
            let mut config = valid();
            match &mappings {
                None => drop(config.as_object_mut().unwrap().remove("mappings")),
                Some(empty) => config["mappings"] = empty.clone(),
            }
            let loaded = Config::from_json_for_setup(&config.to_string()).unwrap();
            assert!(loaded.mappings.is_empty());
            assert!(error_of(config).starts_with("configuration field `mappings`"));
        }
        // Every other field is still checked, mappings included when present.
        let mut bad = valid();
        bad.as_object_mut().unwrap().remove("tenant_id");
        assert_eq!(
            Config::from_json_for_setup(&bad.to_string())
                .unwrap_err()
                .to_string(),
            "configuration field `tenant_id`: is required"
        );
        let mut bad = valid();
        bad["mappings"] = json!([{"column": "donotemail"}]);
        assert!(Config::from_json_for_setup(&bad.to_string())
            .unwrap_err()
            .to_string()
            .starts_with("configuration field `mappings[0]`"));
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in [
            "client_id",
            "client_secret",
            "tenant_id",
            "server_instance",
            "mappings",
            "didomi",
        ] {
            let mut config = valid();
            config.as_object_mut().unwrap().remove(field);
            let alternative = if field == "mappings" {
                " (or a contact_point_consent section)"
            } else {
                ""
            };
            assert_eq!(
                error_of(config),
                format!("configuration field `{field}`: is required{alternative}")
            );
        }
        let mut config = valid();
        config["didomi"]
            .as_object_mut()
            .unwrap()
            .remove("api_secret");
        assert_eq!(
            error_of(config),
            "configuration field `didomi.api_secret`: is required"
        );
    }

    #[test]
    fn wrong_types_and_bad_mappings_name_the_field_and_index() {
        let mut config = valid();
        config["upsert_mode"] = json!("yes");
        assert_eq!(
            error_of(config),
            "configuration field `upsert_mode`: invalid type: string \"yes\", expected a boolean"
        );

        let mut config = valid();
        config["mappings"] = json!([
            {"column": "donotbulkemail", "purpose": "marketing"},
            {"column": "donotemail", "purpose": "a", "channel": "b"}
        ]);
        assert_eq!(
            error_of(config),
            "configuration field `mappings[1]`: set `purpose` or `channel`, not both"
        );

        let mut config = valid();
        config["mappings"] = json!([{"column": "donotemail", "channel": "email", "invert": "yes"}]);
        assert!(
            error_of(config).starts_with("configuration field `mappings[0].invert`: invalid type")
        );

        let mut config = valid();
        config["mappings"] = json!([]);
        assert_eq!(
            error_of(config),
            "configuration field `mappings`: needs at least one mapping"
        );

        let mut config = valid();
        config["mappings"] = json!([
            {"column": "donotemail", "channel": "email", "invert": true},
            {"column": "donotemail", "purpose": "marketing", "invert": true}
        ]);
        assert_eq!(
            error_of(config),
            "configuration field `mappings[1]`: column `donotemail` is already mapped"
        );

        let mut config = valid();
        config["mappings"] = json!([{"column": "emailaddress1", "purpose": "marketing"}]);
        assert!(
            error_of(config).contains("`mappings[0]`: column `emailaddress1` is the contact_key")
        );
    }

    #[test]
    fn urls_must_be_https_except_on_loopback() {
        let mut config = valid();
        config["server_instance"] = json!("http://contoso.crm4.dynamics.com");
        assert!(
            error_of(config).starts_with("configuration field `server_instance`: must use https")
        );

        for loopback in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            let mut config = valid();
            config["authority_host"] = json!(loopback);
            config["didomi_api_url"] = json!(format!("{loopback}/v1"));
            Config::from_json(&config.to_string()).unwrap();
        }

        let mut config = valid();
        config["didomi_api_url"] = json!("http://10.0.0.1/v1");
        assert!(
            error_of(config).starts_with("configuration field `didomi_api_url`: must use https")
        );

        let mut config = valid();
        config["server_instance"] = json!("https://contoso.crm4.dynamics.com/api/data/v9.2");
        assert!(error_of(config).contains("root URL"));
    }

    #[test]
    fn jwt_auth_needs_client_ids_and_ips_must_parse() {
        let mut config = valid();
        config["didomi_webhook"] = json!({"auth": "jwt", "client_ids": [" "]});
        let config = Config::from_json(&config.to_string()).unwrap();
        let error = config.check_didomi_webhook().unwrap_err().to_string();
        assert!(
            error.starts_with("configuration field `didomi_webhook.client_ids`"),
            "{error}"
        );

        // A configuration for the other direction alone still loads.
        let mut config = valid();
        config.as_object_mut().unwrap().remove("didomi_webhook");
        let config = Config::from_json(&config.to_string()).unwrap();
        assert!(config.check_didomi_webhook().is_err());

        let mut config = valid();
        config["didomi_webhook"] =
            json!({"auth": "none", "allowed_source_ips": ["1.2.3.4", "nope"]});
        assert_eq!(
            error_of(config),
            "configuration field `didomi_webhook.allowed_source_ips[1]`: is not an IP address"
        );
    }

    #[test]
    fn typos_are_rejected_and_errors_never_echo_secret_values() {
        let mut config = valid();
        config["upsert_mod"] = json!(true);
        assert!(error_of(config).contains("unknown field `upsert_mod`"));

        let mut config = valid();
        config["client_secret"] = json!(4242);
        let error = error_of(config);
        assert_eq!(
            error,
            "configuration field `client_secret`: must be a non-empty string"
        );

        let config = Config::from_json(&valid().to_string()).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn the_dynamics_webhook_key_is_checked_only_where_it_is_used() {
        let config = Config::from_json(&valid().to_string()).unwrap();
        let error = config.dynamics_webhook_key().unwrap_err().to_string();
        assert!(
            error.starts_with("configuration field `dynamics_webhook_key`: is required"),
            "{error}"
        );
        let mut short = valid();
        short["dynamics_webhook_key"] = json!("short-key");
        let config = Config::from_json(&short.to_string()).unwrap();
        let error = config.dynamics_webhook_key().unwrap_err().to_string();
        assert!(error.contains("at least 16 characters"), "{error}");
        assert!(!error.contains("short-key"));
        let mut good = valid();
        good["dynamics_webhook_key"] = json!("0123456789abcdef0123");
        let config = Config::from_json(&good.to_string()).unwrap();
        assert_eq!(
            config.dynamics_webhook_key().unwrap().expose(),
            "0123456789abcdef0123"
        );
    }

    #[test]
    fn the_pseudonym_key_is_given_or_derived_from_the_client_secret() {
        let derived = Config::from_json(&valid().to_string()).unwrap();
        assert_ne!(derived.log_pseudonym_key.expose(), "s3cret");
        assert_eq!(derived.log_pseudonym_key.expose().len(), 64);
        let mut rotated = valid();
        rotated["client_secret"] = json!("another");
        let rotated = Config::from_json(&rotated.to_string()).unwrap();
        assert_ne!(
            derived.pseudonyms().of("jane@example.com"),
            rotated.pseudonyms().of("jane@example.com")
        );

        let mut given = valid();
        given["log_pseudonym_key"] = json!("a-long-pseudonym-key-0001");
        let given = Config::from_json(&given.to_string()).unwrap();
        assert_eq!(
            given.log_pseudonym_key.expose(),
            "a-long-pseudonym-key-0001"
        );

        let mut short = valid();
        short["log_pseudonym_key"] = json!("short");
        assert!(error_of(short).contains("`log_pseudonym_key`: must be at least 16"));
        let mut wrong = valid();
        wrong["log_pseudonym_key"] = json!(12);
        assert_eq!(
            error_of(wrong),
            "configuration field `log_pseudonym_key`: must be a non-empty string"
        );
    }

    #[test]
    fn the_documented_example_loads_for_both_directions() {
        let text = include_str!("../../config.example.json");
        let config = Config::from_json(text).unwrap();
        config.check_didomi_webhook().unwrap();
        config.dynamics_webhook_key().unwrap();
        assert_eq!(config.mappings.len(), 4);
    }

    #[test]
    fn the_sync_timestamp_column_is_a_column_of_its_own() {
        let mut config = valid();
        config["sync_timestamp_column"] = json!("new_consentsyncedon");
        let config = Config::from_json(&config.to_string()).unwrap();
        assert_eq!(
            config.sync_timestamp_column.as_deref(),
            Some("new_consentsyncedon")
        );
        let mut taken = valid();
        taken["sync_timestamp_column"] = json!("donotbulkemail");
        assert!(
            error_of(taken).contains("`sync_timestamp_column`: column `donotbulkemail` is already")
        );
        let mut bad = valid();
        bad["sync_timestamp_column"] = json!("Modified On");
        assert!(error_of(bad).starts_with("configuration field `sync_timestamp_column`"));
    }

    #[test]
    fn invalid_json_says_so() {
        let error = Config::from_json("{\"client_id\": ").unwrap_err();
        assert!(matches!(error, ConfigError::NotJson(_)), "{error}");
    }

    // Found by the property tests: serde quoted a wrong value whole.
    #[test]
    fn a_wrong_value_is_quoted_cut_in_the_error() {
        for (field, value) in [
            ("mappings", json!(["x".repeat(5_000)])),
            ("didomi_webhook", json!({"auth": "y".repeat(5_000)})),
        ] {
            let mut config = valid();
            config[field] = value;
            let message = Config::from_json(&config.to_string())
                .unwrap_err()
                .to_string();
            assert!(message.len() < 300, "{message}");
            assert!(message.contains("…"), "{message}");
        }
    }
}
