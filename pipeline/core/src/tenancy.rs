//! Tenancy: organizations, admin tokens with roles, API keys, and the config events that
//! create and change them.
//!
//! Config changes are events on the durable log ("config changes are log events
//! too"), so the [`Registry`] is a pure fold over [`ConfigEvent`]s: replaying the log rebuilds
//! it exactly. Validation happens before an event is appended; [`Registry::apply`] trusts its
//! input, so a replay can never fail halfway.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::crm::{DestinationEvent, DestinationState, IntegrationEvent, IntegrationState};
pub use crate::plan::{Plan, PlanChange, DEFAULT_RETENTION_DAYS};
use crate::rules::RuleDef;
use crate::scoring::{ScoringEvent, ScoringState};
use crate::{path, secret};

/// An organization (tenant). Numeric so that it is a safe NATS subject token and cheap to
/// carry through the dataflow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct OrgId(pub u64);

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The org created on first start.
pub const DEFAULT_ORG: OrgId = OrgId(1);

/// Where the server administrator's stored token lives: outside every org, so that no
/// org's Owner or Admin can list, revoke or change it. (The administrator also acts as
/// Owner of [`DEFAULT_ORG`], as the `TRAILSPARK_ADMIN_TOKEN` does.)
pub const SERVER_ORG: OrgId = OrgId(0);

/// Roles in ascending order of power; each has every permission of those below it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// What an API key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointType {
    SignalStaging,
    ProductOrg,
}

impl EndpointType {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::SignalStaging => "signal_staging",
            EndpointType::ProductOrg => "product_org",
        }
    }
}

/// Field-mapping template of a Product Org Updates key: dot paths into the payload.
/// Only `product_org_id` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductOrgTemplate {
    pub product_org_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_count: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_flags: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_fields: BTreeMap<String, String>,
}

impl ProductOrgTemplate {
    /// Every path must be a well-formed dot path; names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let named = [
            ("product_org_id", Some(&self.product_org_id)),
            ("name", self.name.as_ref()),
            ("plan_id", self.plan_id.as_ref()),
            ("plan_name", self.plan_name.as_ref()),
            ("user_count", self.user_count.as_ref()),
            ("mrr", self.mrr.as_ref()),
            ("trial_status", self.trial_status.as_ref()),
            ("last_active_at", self.last_active_at.as_ref()),
            ("feature_flags", self.feature_flags.as_ref()),
        ];
        let custom = self
            .custom_fields
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v)));
        for (field, p) in named.into_iter().chain(custom) {
            if let Some(p) = p {
                if !path::is_valid(p) {
                    return Err(format!(
                        "template.{field}: `{p}` is not a dot-notation path"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An API key as stored: the key itself only as its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: u64,
    pub org_id: OrgId,
    pub name: String,
    pub endpoint_type: EndpointType,
    /// Hex SHA-256 of the full `sk_…` key.
    pub key_hash: String,
    /// The first characters of the key, for listings.
    pub prefix: String,
    /// Shared secret required in `X-Api-Secret` (or as the HMAC key of `X-Signature`). Kept
    /// in clear because HMAC verification needs it; it never leaves the server after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Unix milliseconds; `None` never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ProductOrgTemplate>,
    /// The web origins whose pages may send with this key from a browser (CORS). `None` is
    /// the endpoint type's default ([`ApiKey::origin_allowed`]); `"*"` allows any origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
}

impl ApiKey {
    /// Whether a browser page on `origin` may send with this key. Without a list of its own,
    /// a signal-staging key takes any origin (a website snippet's key is public anyway) and
    /// a product-org key none (its updates come from servers). An entry is an exact origin
    /// (`https://example.com`, compared without case), `*`, or a wildcard subdomain
    /// (`https://*.example.com`, which does not take `https://example.com` itself).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        match &self.allowed_origins {
            None => self.endpoint_type == EndpointType::SignalStaging,
            Some(list) => origin_listed(list, origin),
        }
    }
}

/// Whether `origin` matches an entry of `list` (entries as [`ApiKey::origin_allowed`] reads
/// them).
pub fn origin_listed(list: &[String], origin: &str) -> bool {
    list.iter().any(|entry| origin_matches(entry, origin))
}

fn origin_matches(entry: &str, origin: &str) -> bool {
    let entry = entry.trim_end_matches('/');
    if entry == "*" || entry.eq_ignore_ascii_case(origin) {
        return true;
    }
    let Some((scheme, host)) = entry.split_once("://*.") else {
        return false;
    };
    let origin = origin.to_ascii_lowercase();
    let Some(rest) = origin.strip_prefix(&format!("{}://", scheme.to_ascii_lowercase())) else {
        return false;
    };
    let suffix = format!(".{}", host.to_ascii_lowercase());
    rest.len() > suffix.len() && rest.ends_with(&suffix)
}

/// Checks a list of allowed origins as a user sends it: each entry `*`, or
/// `scheme://host[:port]` with an optional leading `*.` on the host, and no path.
pub fn validate_origins(list: &[String]) -> Result<(), String> {
    for o in list {
        if o == "*" {
            continue;
        }
        let Some((scheme, host)) = o.trim_end_matches('/').split_once("://") else {
            return Err(format!(
                "allowed_origins: `{o}` is not an origin like https://example.com"
            ));
        };
        let host_ok = !host.is_empty()
            && !host.contains('/')
            && host
                .trim_start_matches("*.")
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !matches!(scheme, "http" | "https") || !host_ok {
            return Err(format!(
                "allowed_origins: `{o}` is not an origin (scheme://host[:port], no path)"
            ));
        }
    }
    Ok(())
}

/// An admin (management API) token: bound to an org and a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: u64,
    pub org_id: OrgId,
    pub role: Role,
    pub name: String,
    pub token_hash: String,
    /// The server administrator may create orgs.
    #[serde(default)]
    pub server_admin: bool,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub created_at: i64,
}

/// A change to tenancy configuration, as written to the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConfigEvent {
    OrgCreated(Org),
    TokenCreated(AdminToken),
    TokenRevoked {
        id: u64,
        at: i64,
    },
    /// A token's role changed (an ownership transfer promotes one token and demotes another).
    TokenRoleChanged {
        id: u64,
        role: Role,
        at: i64,
    },
    KeyCreated(ApiKey),
    KeyRevoked {
        id: u64,
        at: i64,
    },
    KeyTemplateSet {
        id: u64,
        template: ProductOrgTemplate,
    },
    /// A key's allowed browser origins set (`None`: back to its type's default).
    KeyOriginsSet {
        id: u64,
        origins: Option<Vec<String>>,
    },
    /// A mapping rule created; with `reprocess` it also applies to signals already on the log.
    RuleCreated {
        org_id: OrgId,
        rule_id: u64,
        created_at: i64,
        def: RuleDef,
        reprocess: bool,
    },
    /// A mapping rule edited; without `reprocess` the edit applies from its log position on.
    RuleUpdated {
        org_id: OrgId,
        rule_id: u64,
        at: i64,
        def: RuleDef,
        reprocess: bool,
    },
    /// A mapping rule deleted; what it produced earlier stays.
    RuleDeleted {
        org_id: OrgId,
        rule_id: u64,
        at: i64,
    },
    /// An org's plan limits (0 means unlimited).
    PlanSet {
        org_id: OrgId,
        plan: Plan,
    },
    /// Manual processing (the explorer's Process Signals): every live rule of the org now
    /// applies to all of the org's signals, including those that arrived before it.
    SignalsProcessed {
        org_id: OrgId,
        at: i64,
    },
    /// A log position whose entry was lost (the journal's tail was cut after a disk fault
    /// or a snapshot restore) and that the archive could not restore: it holds this marker
    /// so that its id is never given to another entry.
    EntryLost {
        position: u64,
        at: i64,
    },
    /// Lead scoring's configuration (settings, evaluation rules, ICP models) and clock.
    Scoring(ScoringEvent),
    /// A CRM integration changed, or one of its syncs moved on.
    Integration(IntegrationEvent),
    /// A destination (evaluations written back to a CRM) created, edited or deleted.
    Destination(DestinationEvent),
    /// Archived signals brought back into live state for a while (retrieval);
    /// they count against the raw-signal meter of `month` (`YYYYMM`).
    SignalsRehydrated {
        org_id: OrgId,
        at: i64,
        month: u32,
        count: u64,
    },
}

/// A mapping rule as the API shows it: its latest definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRule {
    pub id: u64,
    pub org_id: OrgId,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: u64,
    pub def: RuleDef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// Why a presented API key is not accepted (each maps to a 401 with its own code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Revoked,
    Expired,
}

/// Who a bearer token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub org_id: OrgId,
    pub role: Role,
    pub server_admin: bool,
    /// `None` for the token given by `TRAILSPARK_ADMIN_TOKEN`, which is not stored.
    pub token_id: Option<u64>,
}

/// The registry as the server shares it: folded by the log's replay and by config
/// appends, read by every part that checks keys, plans or rules.
pub type SharedRegistry = std::sync::Arc<std::sync::RwLock<Registry>>;

/// Tenancy state: the fold of all config events.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    orgs: BTreeMap<OrgId, Org>,
    keys: BTreeMap<u64, ApiKey>,
    key_by_hash: HashMap<String, u64>,
    tokens: BTreeMap<u64, AdminToken>,
    token_by_hash: HashMap<String, u64>,
    rules: BTreeMap<u64, MappingRule>,
    plans: BTreeMap<OrgId, Plan>,
    /// Rehydrated signals per (org, month `YYYYMM`): raw-signal usage on top of the log's.
    rehydrated: HashMap<(OrgId, u32), u64>,
    scoring: ScoringState,
    integrations: IntegrationState,
    destinations: DestinationState,
}

impl Registry {
    pub fn apply(&mut self, event: &ConfigEvent) {
        match event {
            ConfigEvent::OrgCreated(org) => {
                self.orgs.insert(org.id, org.clone());
            }
            ConfigEvent::TokenCreated(t) => {
                self.token_by_hash.insert(t.token_hash.clone(), t.id);
                self.tokens.insert(t.id, t.clone());
            }
            ConfigEvent::TokenRevoked { id, at } => {
                if let Some(t) = self.tokens.get_mut(id) {
                    t.revoked_at.get_or_insert(*at);
                }
            }
            ConfigEvent::TokenRoleChanged { id, role, .. } => {
                if let Some(t) = self.tokens.get_mut(id) {
                    t.role = *role;
                }
            }
            ConfigEvent::KeyCreated(k) => {
                self.key_by_hash.insert(k.key_hash.clone(), k.id);
                self.keys.insert(k.id, k.clone());
            }
            ConfigEvent::KeyRevoked { id, at } => {
                if let Some(k) = self.keys.get_mut(id) {
                    k.revoked_at.get_or_insert(*at);
                }
            }
            ConfigEvent::KeyTemplateSet { id, template } => {
                if let Some(k) = self.keys.get_mut(id) {
                    k.template = Some(template.clone());
                }
            }
            ConfigEvent::KeyOriginsSet { id, origins } => {
                if let Some(k) = self.keys.get_mut(id) {
                    k.allowed_origins = origins.clone();
                }
            }
            ConfigEvent::RuleCreated {
                org_id,
                rule_id,
                created_at,
                def,
                ..
            } => {
                self.rules.insert(
                    *rule_id,
                    MappingRule {
                        id: *rule_id,
                        org_id: *org_id,
                        created_at: *created_at,
                        updated_at: *created_at,
                        version: 1,
                        def: def.clone(),
                        deleted_at: None,
                    },
                );
            }
            ConfigEvent::RuleUpdated {
                rule_id, at, def, ..
            } => {
                if let Some(r) = self
                    .rules
                    .get_mut(rule_id)
                    .filter(|r| r.deleted_at.is_none())
                {
                    r.def = def.clone();
                    r.updated_at = *at;
                    r.version += 1;
                }
            }
            ConfigEvent::RuleDeleted { rule_id, at, .. } => {
                if let Some(r) = self.rules.get_mut(rule_id) {
                    r.deleted_at.get_or_insert(*at);
                }
            }
            ConfigEvent::PlanSet { org_id, plan } => {
                self.plans.insert(*org_id, *plan);
            }
            ConfigEvent::SignalsProcessed { .. } | ConfigEvent::EntryLost { .. } => {}
            ConfigEvent::Scoring(e) => self.scoring.apply(e),
            ConfigEvent::Integration(e) => {
                if let IntegrationEvent::Deleted { id, .. } = e {
                    self.destinations.forget_integration(*id);
                }
                self.integrations.apply(e)
            }
            ConfigEvent::Destination(e) => self.destinations.apply(e),
            ConfigEvent::SignalsRehydrated {
                org_id,
                month,
                count,
                ..
            } => {
                *self.rehydrated.entry((*org_id, *month)).or_default() += count;
            }
        }
    }

    /// Lead scoring's configuration.
    pub fn scoring(&self) -> &ScoringState {
        &self.scoring
    }

    /// CRM integrations and their syncs' cursors.
    pub fn integrations(&self) -> &IntegrationState {
        &self.integrations
    }

    /// Destinations: where evaluations are written back.
    pub fn destinations(&self) -> &DestinationState {
        &self.destinations
    }

    /// An org's plan (no limits until one is set).
    /// Signals rehydrated for `org` in `month` (`YYYYMM`).
    pub fn rehydrated(&self, org: OrgId, month: u32) -> u64 {
        self.rehydrated.get(&(org, month)).copied().unwrap_or(0)
    }

    pub fn plan(&self, org: OrgId) -> Plan {
        self.plans.get(&org).copied().unwrap_or_default()
    }

    pub fn rule(&self, id: u64) -> Option<&MappingRule> {
        self.rules.get(&id)
    }

    /// An org's rules that are not deleted.
    pub fn rules_of(&self, org: OrgId) -> impl Iterator<Item = &MappingRule> {
        self.rules
            .values()
            .filter(move |r| r.org_id == org && r.deleted_at.is_none())
    }

    pub fn next_rule_id(&self) -> u64 {
        self.rules.keys().next_back().map_or(1, |k| k + 1)
    }

    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty()
    }

    pub fn org(&self, id: OrgId) -> Option<&Org> {
        self.orgs.get(&id)
    }

    pub fn orgs(&self) -> impl Iterator<Item = &Org> {
        self.orgs.values()
    }

    pub fn next_org_id(&self) -> OrgId {
        OrgId(self.orgs.keys().next_back().map_or(1, |o| o.0 + 1))
    }

    pub fn next_key_id(&self) -> u64 {
        self.keys.keys().next_back().map_or(1, |k| k + 1)
    }

    pub fn next_token_id(&self) -> u64 {
        self.tokens.keys().next_back().map_or(1, |k| k + 1)
    }

    pub fn key(&self, id: u64) -> Option<&ApiKey> {
        self.keys.get(&id)
    }

    pub fn keys_of(&self, org: OrgId) -> impl Iterator<Item = &ApiKey> {
        self.keys.values().filter(move |k| k.org_id == org)
    }

    pub fn token(&self, id: u64) -> Option<&AdminToken> {
        self.tokens.get(&id)
    }

    pub fn tokens_of(&self, org: OrgId) -> impl Iterator<Item = &AdminToken> {
        self.tokens.values().filter(move |t| t.org_id == org)
    }

    /// The org's Owner tokens that are not revoked.
    pub fn live_owners(&self, org: OrgId) -> usize {
        self.tokens_of(org)
            .filter(|t| t.role == Role::Owner && t.revoked_at.is_none())
            .count()
    }

    /// Checks a presented API key at time `now` (Unix ms).
    pub fn check_key(&self, presented: &str, now: i64) -> Result<&ApiKey, KeyRejection> {
        let id = self
            .key_by_hash
            .get(&secret::hash(presented))
            .ok_or(KeyRejection::Unknown)?;
        let key = &self.keys[id];
        if key.revoked_at.is_some() {
            Err(KeyRejection::Revoked)
        } else if key.expires_at.is_some_and(|e| e <= now) {
            Err(KeyRejection::Expired)
        } else {
            Ok(key)
        }
    }

    /// The principal of a presented admin token, if it is known and not revoked.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let id = self.token_by_hash.get(&secret::hash(presented))?;
        let t = &self.tokens[id];
        // The administrator's own token acts as Owner of the default org.
        let org_id = if t.org_id == SERVER_ORG {
            DEFAULT_ORG
        } else {
            t.org_id
        };
        t.revoked_at.is_none().then_some(Principal {
            org_id,
            role: t.role,
            server_admin: t.server_admin,
            token_id: Some(t.id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, raw: &str, expires_at: Option<i64>) -> ApiKey {
        ApiKey {
            id,
            org_id: OrgId(1),
            name: "k".into(),
            endpoint_type: EndpointType::SignalStaging,
            key_hash: secret::hash(raw),
            prefix: secret::display_prefix(raw),
            secret: None,
            expires_at,
            created_at: 0,
            revoked_at: None,
            template: None,
            allowed_origins: None,
        }
    }

    #[test]
    fn key_states() {
        let mut r = Registry::default();
        r.apply(&ConfigEvent::KeyCreated(key(1, "sk_a", None)));
        r.apply(&ConfigEvent::KeyCreated(key(2, "sk_b", Some(100))));
        assert_eq!(r.check_key("sk_a", 1_000).unwrap().id, 1);
        assert_eq!(r.check_key("sk_x", 1_000), Err(KeyRejection::Unknown));
        assert_eq!(r.check_key("sk_b", 99).unwrap().id, 2);
        assert_eq!(r.check_key("sk_b", 100), Err(KeyRejection::Expired));
        r.apply(&ConfigEvent::KeyRevoked { id: 1, at: 5 });
        assert_eq!(r.check_key("sk_a", 1_000), Err(KeyRejection::Revoked));
        assert_eq!(r.next_key_id(), 3);
    }

    #[test]
    fn allowed_origins() {
        let mut k = key(1, "sk_a", None);
        assert!(
            k.origin_allowed("https://anything.example"),
            "signal keys default to any"
        );
        k.endpoint_type = EndpointType::ProductOrg;
        assert!(
            !k.origin_allowed("https://anything.example"),
            "org keys default to none"
        );
        k.allowed_origins = Some(vec![
            "https://Shop.example.com".into(),
            "https://*.acme.io".into(),
        ]);
        assert!(k.origin_allowed("https://shop.example.com"));
        assert!(
            !k.origin_allowed("http://shop.example.com"),
            "scheme counts"
        );
        assert!(
            !k.origin_allowed("https://shop.example.com:8443"),
            "port counts"
        );
        assert!(k.origin_allowed("https://www.acme.io"));
        assert!(k.origin_allowed("https://a.b.acme.io"));
        assert!(!k.origin_allowed("https://acme.io"));
        assert!(!k.origin_allowed("https://evilacme.io"));
        k.allowed_origins = Some(vec![]);
        assert!(!k.origin_allowed("https://shop.example.com"));
        k.allowed_origins = Some(vec!["*".into()]);
        assert!(k.origin_allowed("null"));
        assert!(validate_origins(&[
            "https://a.b:8080".into(),
            "*".into(),
            "http://*.x.io".into()
        ])
        .is_ok());
        for bad in [
            "example.com",
            "https://a.com/path",
            "ftp://a.com",
            "https://",
        ] {
            assert!(validate_origins(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(
            Role::Owner > Role::Admin && Role::Admin > Role::Editor && Role::Editor > Role::Viewer
        );
        assert_eq!(Role::parse("Editor"), Some(Role::Editor));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn template_paths_are_validated() {
        let mut t = ProductOrgTemplate {
            product_org_id: "groupId".into(),
            ..Default::default()
        };
        assert!(t.validate().is_ok());
        t.custom_fields
            .insert("projects".into(), "metrics..total".into());
        assert!(t.validate().unwrap_err().contains("template.projects"));
    }
}
