//! Server state shared by the HTTP handlers: the tenancy registry and the log, plus the
//! config operations (orgs, tokens, keys) used by both the admin API and the CLI.

use std::sync::{Arc, RwLock};

use thiserror::Error;
use trailspark_core::rules::RuleDef;
use trailspark_core::secret;
use trailspark_core::tenancy::MappingRule;
use trailspark_core::tenancy::{
    AdminToken, ApiKey, ConfigEvent, EndpointType, KeyRejection, Org, OrgId, Principal,
    ProductOrgTemplate, Registry, Role, DEFAULT_ORG, SERVER_ORG,
};
use trailspark_core::{LogEntry, Plan};
use trailspark_operators::Signal;
use trailspark_sources::{Ingest, IngestError, Receipt, SubmitFuture};

use crate::engine::Engine;
use crate::log::{Log, LogError};

/// Errors of config operations, mapped to HTTP statuses by the admin API.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What to create a key with.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub name: String,
    pub endpoint_type: EndpointType,
    pub secret: bool,
    pub expires_at: Option<i64>,
    pub template: Option<ProductOrgTemplate>,
}

/// A created key: the record and the one-time plaintexts.
pub struct CreatedKey {
    pub key: ApiKey,
    pub plaintext: String,
    pub secret: Option<String>,
}

/// Raw signals counted per (org, month `YYYYMM`), for the plan's raw-signal limit. Exact at
/// the edge: a signal's slot is reserved before its append and released if the append fails
/// or the log recognises a retry, so concurrent requests can never overshoot the limit.
#[derive(Default)]
pub struct Quota {
    counts: std::sync::Mutex<std::collections::HashMap<(OrgId, u32), u64>>,
}

impl Quota {
    pub fn from_counts(counts: std::collections::HashMap<(OrgId, u32), u64>) -> Quota {
        Quota {
            counts: std::sync::Mutex::new(counts),
        }
    }

    pub fn used(&self, org: OrgId, month: u32) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(&(org, month))
            .copied()
            .unwrap_or(0)
    }

    /// Reserves a slot unless the plan forbids it; `Err` names the limit.
    fn reserve(
        &self,
        org: OrgId,
        month: u32,
        plan: &trailspark_core::Plan,
    ) -> Result<(), IngestError> {
        let mut counts = self.counts.lock().unwrap();
        let c = counts.entry((org, month)).or_default();
        if plan.raw_signal_limit != 0 && !plan.overage && *c >= plan.raw_signal_limit {
            return Err(IngestError::LimitReached {
                limit: plan.raw_signal_limit,
                period: format!("{}-{:02}", month / 100, month % 100),
            });
        }
        *c += 1;
        Ok(())
    }

    /// Reserves `n` slots at once (rehydration), or none: `Err` names the limit.
    pub fn reserve_n(
        &self,
        org: OrgId,
        month: u32,
        plan: &trailspark_core::Plan,
        n: u64,
    ) -> Result<(), IngestError> {
        let mut counts = self.counts.lock().unwrap();
        let c = counts.entry((org, month)).or_default();
        if plan.raw_signal_limit != 0 && !plan.overage && *c + n > plan.raw_signal_limit {
            return Err(IngestError::LimitReached {
                limit: plan.raw_signal_limit,
                period: format!("{}-{:02}", month / 100, month % 100),
            });
        }
        *c += n;
        Ok(())
    }

    pub fn release_n(&self, org: OrgId, month: u32, n: u64) {
        if let Some(c) = self.counts.lock().unwrap().get_mut(&(org, month)) {
            *c = c.saturating_sub(n);
        }
    }

    fn release(&self, org: OrgId, month: u32) {
        if let Some(c) = self.counts.lock().unwrap().get_mut(&(org, month)) {
            *c = c.saturating_sub(1);
        }
    }
}

pub struct AppState {
    pub registry: RwLock<Registry>,
    pub log: Log,
    /// The dataflow and its read models (absent for offline CLI commands).
    pub engine: Option<Arc<Engine>>,
    pub quota: Arc<Quota>,
    /// Hash of `TRAILSPARK_ADMIN_TOKEN`, when set.
    env_admin_hash: Option<String>,
    /// Serializes config writes: read next ids, append, apply.
    config_lock: tokio::sync::Mutex<()>,
    /// The Parquet archive (set by `serve` when the engine runs).
    pub archiver: std::sync::OnceLock<Arc<trailspark_sinks::archive::Archiver>>,
    /// The SQL engine over the archive and the read models.
    pub sql: std::sync::OnceLock<trailspark_queries::SqlEngine>,
    /// Retention settings (set by `serve` with the archive).
    pub retention: std::sync::OnceLock<crate::retention::RetentionConfig>,
    /// NATS connectivity, the source's consumer and the event publisher (with `--nats`).
    pub nats: std::sync::OnceLock<Arc<crate::nats::NatsStatus>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl AppState {
    pub fn new(
        registry: Registry,
        log: Log,
        env_admin_token: Option<&str>,
        engine: Option<(Arc<Engine>, Quota)>,
    ) -> Arc<AppState> {
        let (engine, quota) = match engine {
            Some((e, q)) => (Some(e), Arc::new(q)),
            None => (None, Arc::new(Quota::default())),
        };
        Arc::new(AppState {
            registry: RwLock::new(registry),
            log,
            engine,
            quota,
            env_admin_hash: env_admin_token.map(secret::hash),
            config_lock: tokio::sync::Mutex::new(()),
            archiver: std::sync::OnceLock::new(),
            sql: std::sync::OnceLock::new(),
            retention: std::sync::OnceLock::new(),
            nats: std::sync::OnceLock::new(),
        })
    }

    /// The principal of a bearer token: the environment's admin token or a stored one.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        if let Some(h) = &self.env_admin_hash {
            if secret::eq(secret::hash(token).as_bytes(), h.as_bytes()) {
                return Some(Principal {
                    org_id: DEFAULT_ORG,
                    role: Role::Owner,
                    server_admin: true,
                    token_id: None,
                });
            }
        }
        self.registry.read().unwrap().authenticate(token)
    }

    /// Appends config events durably, then applies them; answers the last one's position.
    async fn commit(&self, events: Vec<ConfigEvent>) -> Result<u64, ConfigError> {
        let receipts = self
            .log
            .append(events.iter().cloned().map(LogEntry::Config).collect())
            .await?;
        let mut reg = self.registry.write().unwrap();
        for e in &events {
            reg.apply(e);
        }
        Ok(receipts.last().map_or(0, |r| r.position))
    }

    /// Creates a mapping rule; answers it and the log position of the change.
    pub async fn create_rule(
        &self,
        org: OrgId,
        def: RuleDef,
        reprocess: bool,
    ) -> Result<(MappingRule, u64), ConfigError> {
        def.validate().map_err(ConfigError::Invalid)?;
        let _g = self.config_lock.lock().await;
        let rule_id = self.registry.read().unwrap().next_rule_id();
        let event = ConfigEvent::RuleCreated {
            org_id: org,
            rule_id,
            created_at: now_ms(),
            def,
            reprocess,
        };
        self.commit_rule(rule_id, event).await
    }

    /// Replaces a rule's definition; `reprocess` re-derives the signals it affects.
    pub async fn update_rule(
        &self,
        org: OrgId,
        rule_id: u64,
        def: RuleDef,
        reprocess: bool,
    ) -> Result<(MappingRule, u64), ConfigError> {
        def.validate().map_err(ConfigError::Invalid)?;
        let _g = self.config_lock.lock().await;
        self.live_rule(org, rule_id)?;
        let event = ConfigEvent::RuleUpdated {
            org_id: org,
            rule_id,
            at: now_ms(),
            def,
            reprocess,
        };
        self.commit_rule(rule_id, event).await
    }

    pub async fn delete_rule(
        &self,
        org: OrgId,
        rule_id: u64,
    ) -> Result<(MappingRule, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        self.live_rule(org, rule_id)?;
        let event = ConfigEvent::RuleDeleted {
            org_id: org,
            rule_id,
            at: now_ms(),
        };
        self.commit_rule(rule_id, event).await
    }

    /// Commits one rule event and answers the rule as it now is, with the event's position.
    async fn commit_rule(
        &self,
        rule_id: u64,
        event: ConfigEvent,
    ) -> Result<(MappingRule, u64), ConfigError> {
        let pos = self.commit(vec![event]).await?;
        let rule = self.registry.read().unwrap().rule(rule_id).cloned();
        Ok((
            rule.expect("a committed rule event leaves the rule in the registry"),
            pos,
        ))
    }

    fn live_rule(&self, org: OrgId, rule_id: u64) -> Result<(), ConfigError> {
        let reg = self.registry.read().unwrap();
        match reg.rule(rule_id) {
            Some(r) if r.org_id == org && r.deleted_at.is_none() => Ok(()),
            _ => Err(ConfigError::NotFound(format!("rule {rule_id}"))),
        }
    }

    /// Manual processing: from this log position on, every live rule of the org applies to
    /// all of its signals. Returns the position.
    pub async fn process_all(&self, org: OrgId) -> Result<u64, ConfigError> {
        let _g = self.config_lock.lock().await;
        self.commit(vec![ConfigEvent::SignalsProcessed {
            org_id: org,
            at: now_ms(),
        }])
        .await
    }

    /// Records a rehydration of `count` signals (usage), after reserving them in the quota.
    pub async fn commit_rehydration(
        &self,
        org: OrgId,
        month: u32,
        count: u64,
    ) -> Result<u64, ConfigError> {
        let _g = self.config_lock.lock().await;
        self.commit(vec![ConfigEvent::SignalsRehydrated {
            org_id: org,
            at: now_ms(),
            month,
            count,
        }])
        .await
    }

    pub async fn set_plan(&self, org: OrgId, plan: Plan) -> Result<u64, ConfigError> {
        let _g = self.config_lock.lock().await;
        self.commit(vec![ConfigEvent::PlanSet { org_id: org, plan }])
            .await
    }

    /// Creates an org with an Owner token; answers the org and the token's plaintext.
    pub async fn create_org(&self, name: &str) -> Result<(Org, String), ConfigError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(ConfigError::Invalid(
                "`name` must be 1-200 characters".into(),
            ));
        }
        let _g = self.config_lock.lock().await;
        let org = {
            let reg = self.registry.read().unwrap();
            Org {
                id: reg.next_org_id(),
                name: name.to_string(),
                created_at: now_ms(),
            }
        };
        let (token, plaintext) = self.new_token(org.id, Role::Owner, "owner", false);
        self.commit(vec![
            ConfigEvent::OrgCreated(org.clone()),
            ConfigEvent::TokenCreated(token),
        ])
        .await?;
        Ok((org, plaintext))
    }

    /// A token record and its plaintext, with the next free id (the config lock must be
    /// held until it is committed).
    fn new_token(
        &self,
        org_id: OrgId,
        role: Role,
        name: &str,
        server_admin: bool,
    ) -> (AdminToken, String) {
        let plaintext = secret::generate("ts_");
        let token = AdminToken {
            id: self.registry.read().unwrap().next_token_id(),
            org_id,
            role,
            name: name.trim().to_string(),
            token_hash: secret::hash(&plaintext),
            server_admin,
            created_at: now_ms(),
            revoked_at: None,
        };
        (token, plaintext)
    }

    /// Creates a server administrator token: it belongs to no org (see [`SERVER_ORG`]), so
    /// no org's Owner or Admin can revoke it.
    pub async fn create_server_token(&self) -> Result<String, ConfigError> {
        let _g = self.config_lock.lock().await;
        let (token, plaintext) =
            self.new_token(SERVER_ORG, Role::Owner, "server administrator", true);
        self.commit(vec![ConfigEvent::TokenCreated(token)]).await?;
        Ok(plaintext)
    }

    /// Mints another Owner token for `org` (offline recovery when every Owner token is lost).
    pub async fn mint_owner_token(&self, org: OrgId) -> Result<(AdminToken, String), ConfigError> {
        let _g = self.config_lock.lock().await;
        if self.registry.read().unwrap().org(org).is_none() {
            return Err(ConfigError::NotFound(format!("org {org}")));
        }
        let (token, plaintext) = self.new_token(org, Role::Owner, "recovered owner", false);
        self.commit(vec![ConfigEvent::TokenCreated(token.clone())])
            .await?;
        Ok((token, plaintext))
    }

    pub async fn create_token(
        &self,
        by: &Principal,
        role: Role,
        name: &str,
    ) -> Result<(AdminToken, String), ConfigError> {
        if role == Role::Owner {
            return Err(ConfigError::Invalid(
                "Owner tokens are not created; the Owner transfers ownership with \
                 POST /api/admin/tokens/{id}/transfer-ownership"
                    .into(),
            ));
        }
        if role > by.role {
            return Err(ConfigError::Forbidden(format!(
                "a {} cannot create a {} token",
                by.role.as_str(),
                role.as_str()
            )));
        }
        let _g = self.config_lock.lock().await;
        let (token, plaintext) = self.new_token(by.org_id, role, name, false);
        self.commit(vec![ConfigEvent::TokenCreated(token.clone())])
            .await?;
        Ok((token, plaintext))
    }

    /// Revokes a token of the caller's org. Only an Owner revokes an Owner token, and never
    /// the org's last one: ownership could not be recovered from inside the org.
    pub async fn revoke_token(&self, by: &Principal, id: u64) -> Result<AdminToken, ConfigError> {
        let _g = self.config_lock.lock().await;
        {
            let reg = self.registry.read().unwrap();
            let target = reg
                .token(id)
                .filter(|t| t.org_id == by.org_id)
                .ok_or_else(|| ConfigError::NotFound(format!("token {id}")))?;
            if target.role == Role::Owner && target.revoked_at.is_none() {
                if by.role < Role::Owner {
                    return Err(ConfigError::Forbidden(format!(
                        "only an Owner may revoke an Owner token; the token is {}",
                        by.role.as_str()
                    )));
                }
                if reg.live_owners(by.org_id) <= 1 {
                    return Err(ConfigError::Conflict(
                        "this is the organization's last Owner token; transfer ownership \
                         to another token first"
                            .into(),
                    ));
                }
            }
        }
        self.commit(vec![ConfigEvent::TokenRevoked { id, at: now_ms() }])
            .await?;
        Ok(self.registry.read().unwrap().token(id).cloned().unwrap())
    }

    /// Makes token `to` (a live, non-Owner token of the caller's org) the Owner; the
    /// caller's own token becomes an Admin. Owner only.
    pub async fn transfer_ownership(
        &self,
        by: &Principal,
        to: u64,
    ) -> Result<(AdminToken, Option<AdminToken>), ConfigError> {
        if by.role < Role::Owner {
            return Err(ConfigError::Forbidden(format!(
                "only the Owner may transfer ownership; the token is {}",
                by.role.as_str()
            )));
        }
        let _g = self.config_lock.lock().await;
        let at = now_ms();
        let mut events = Vec::new();
        {
            let reg = self.registry.read().unwrap();
            let target = reg
                .token(to)
                .filter(|t| t.org_id == by.org_id)
                .ok_or_else(|| ConfigError::NotFound(format!("token {to}")))?;
            if target.revoked_at.is_some() {
                return Err(ConfigError::Conflict(format!("token {to} is revoked")));
            }
            if target.role == Role::Owner {
                return Err(ConfigError::Conflict(format!(
                    "token {to} is already an Owner"
                )));
            }
            events.push(ConfigEvent::TokenRoleChanged {
                id: to,
                role: Role::Owner,
                at,
            });
            // The administrator's own token (or the environment's) stays what it is.
            let own = by
                .token_id
                .and_then(|id| reg.token(id))
                .filter(|t| t.org_id == by.org_id);
            if let Some(own) = own {
                events.push(ConfigEvent::TokenRoleChanged {
                    id: own.id,
                    role: Role::Admin,
                    at,
                });
            }
        }
        self.commit(events).await?;
        let reg = self.registry.read().unwrap();
        let previous = by
            .token_id
            .and_then(|id| reg.token(id))
            .filter(|t| t.org_id == by.org_id)
            .cloned();
        Ok((reg.token(to).cloned().unwrap(), previous))
    }

    pub async fn create_key(&self, org: OrgId, new: NewKey) -> Result<CreatedKey, ConfigError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(ConfigError::Invalid(
                "`name` must be 1-200 characters".into(),
            ));
        }
        match (&new.endpoint_type, &new.template) {
            (EndpointType::ProductOrg, None) => {
                return Err(ConfigError::Invalid(
                    "a product_org key needs a `template` with at least `product_org_id`".into(),
                ))
            }
            (EndpointType::SignalStaging, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "only product_org keys take a `template`".into(),
                ))
            }
            (_, Some(t)) => t.validate().map_err(ConfigError::Invalid)?,
            _ => {}
        }
        let _g = self.config_lock.lock().await;
        if self.registry.read().unwrap().org(org).is_none() {
            return Err(ConfigError::NotFound(format!("org {org}")));
        }
        let plaintext = secret::generate("sk_");
        let secret_value = new.secret.then(|| secret::generate("whsec_"));
        let key = ApiKey {
            id: self.registry.read().unwrap().next_key_id(),
            org_id: org,
            name: name.to_string(),
            endpoint_type: new.endpoint_type,
            key_hash: secret::hash(&plaintext),
            prefix: secret::display_prefix(&plaintext),
            secret: secret_value.clone(),
            expires_at: new.expires_at,
            created_at: now_ms(),
            revoked_at: None,
            template: new.template,
        };
        self.commit(vec![ConfigEvent::KeyCreated(key.clone())])
            .await?;
        Ok(CreatedKey {
            key,
            plaintext,
            secret: secret_value,
        })
    }

    pub async fn revoke_key(&self, org: OrgId, id: u64) -> Result<ApiKey, ConfigError> {
        let _g = self.config_lock.lock().await;
        let exists = self
            .registry
            .read()
            .unwrap()
            .key(id)
            .is_some_and(|k| k.org_id == org);
        if !exists {
            return Err(ConfigError::NotFound(format!("key {id}")));
        }
        self.commit(vec![ConfigEvent::KeyRevoked { id, at: now_ms() }])
            .await?;
        Ok(self.registry.read().unwrap().key(id).cloned().unwrap())
    }

    pub async fn set_template(
        &self,
        org: OrgId,
        id: u64,
        template: ProductOrgTemplate,
    ) -> Result<ApiKey, ConfigError> {
        template.validate().map_err(ConfigError::Invalid)?;
        let _g = self.config_lock.lock().await;
        let key = self
            .registry
            .read()
            .unwrap()
            .key(id)
            .filter(|k| k.org_id == org)
            .cloned();
        match key {
            None => return Err(ConfigError::NotFound(format!("key {id}"))),
            Some(k) if k.endpoint_type != EndpointType::ProductOrg => {
                return Err(ConfigError::Invalid(
                    "only product_org keys take a template".into(),
                ))
            }
            Some(_) => {}
        }
        self.commit(vec![ConfigEvent::KeyTemplateSet { id, template }])
            .await?;
        Ok(self.registry.read().unwrap().key(id).cloned().unwrap())
    }
}

impl Ingest for AppState {
    fn check_key(&self, presented: &str, now_ms: i64) -> Result<ApiKey, KeyRejection> {
        self.registry
            .read()
            .unwrap()
            .check_key(presented, now_ms)
            .cloned()
    }

    fn submit(&self, entries: Vec<LogEntry>) -> SubmitFuture {
        // Reserve raw-signal slots; refused entries never reach the log.
        let mut outcome: Vec<Option<IngestError>> = Vec::with_capacity(entries.len());
        let mut reserved: Vec<Option<(OrgId, u32)>> = Vec::with_capacity(entries.len());
        let mut accepted = Vec::with_capacity(entries.len());
        {
            let reg = self.registry.read().unwrap();
            for e in entries {
                let slot = match &e {
                    LogEntry::Signal(s) => {
                        let month = Signal::month_of(s.received_at);
                        match self.quota.reserve(s.org_id, month, &reg.plan(s.org_id)) {
                            Ok(()) => Some((s.org_id, month)),
                            Err(err) => {
                                outcome.push(Some(err));
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                outcome.push(None);
                reserved.push(slot);
                accepted.push(e);
            }
        }
        let quota = self.quota.clone();
        let fut = (!accepted.is_empty()).then(|| self.log.append(accepted));
        Box::pin(async move {
            let receipts: Vec<Receipt> = match fut {
                None => Vec::new(),
                Some(f) => match f.await {
                    Ok(r) => r,
                    Err(e) => {
                        for (org, month) in reserved.iter().flatten() {
                            quota.release(*org, *month);
                        }
                        return Err(IngestError::from(e));
                    }
                },
            };
            // A recognised retry was not appended: it does not count.
            for (r, slot) in receipts.iter().zip(&reserved) {
                if let (true, Some((org, month))) = (r.duplicate, slot) {
                    quota.release(*org, *month);
                }
            }
            let mut receipts = receipts.into_iter();
            Ok(outcome
                .into_iter()
                .map(|o| match o {
                    Some(err) => Err(err),
                    None => receipts
                        .next()
                        .ok_or_else(|| IngestError::Internal("missing receipt".into())),
                })
                .collect())
        })
    }
}
