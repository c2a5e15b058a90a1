//! The control plane: configuration changes (orgs, tokens, keys, plans, mapping rules, and
//! lead scoring's settings, evaluation rules and ICP models in [`scoring`]) made
//! as config events on the log, durably, then folded into the shared tenancy registry. The
//! admin API and the offline CLI both make their changes here.

use std::sync::Arc;

use thiserror::Error;
use trailspark_core::rules::RuleDef;
use trailspark_core::secret;
use trailspark_core::tenancy::MappingRule;
use trailspark_core::tenancy::{
    AdminToken, ApiKey, ConfigEvent, EndpointType, Org, OrgId, PlanChange, Principal,
    ProductOrgTemplate, Role, SharedRegistry, DEFAULT_ORG, SERVER_ORG,
};
use trailspark_core::{LogEntry, Plan};

use crate::log::{Log, LogError};

mod destinations;
mod integrations;
mod scoring;

/// Errors of config operations, mapped to HTTP statuses by the admin API.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    /// A value out of its range: the field, and what is wrong with it.
    #[error("{1}")]
    InvalidField(&'static str, String),
    /// A plan limit reached: the meter, and the seconds until it resets.
    #[error("{0}")]
    LimitReached(String, u64),
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
    /// Browser origins allowed to send with the key; `None` is its type's default.
    pub allowed_origins: Option<Vec<String>>,
}

/// A created key: the record and the one-time plaintexts.
pub struct CreatedKey {
    pub key: ApiKey,
    pub plaintext: String,
    pub secret: Option<String>,
}

/// The admin handle: what changes configuration and who may.
pub struct Control {
    pub registry: SharedRegistry,
    pub(crate) log: Log,
    /// Hash of `TRAILSPARK_ADMIN_TOKEN`, when set.
    env_admin_hash: Option<String>,
    /// Serializes config writes: read next ids, append, apply.
    config_lock: tokio::sync::Mutex<()>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Control {
    /// Changes go to `log` and fold into `registry` (which the log's replay filled).
    pub fn new(registry: SharedRegistry, log: Log, env_admin_token: Option<&str>) -> Arc<Control> {
        Arc::new(Control {
            registry,
            log,
            env_admin_hash: env_admin_token.map(secret::hash),
            config_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether any org exists (a first start has none).
    pub fn is_empty(&self) -> bool {
        self.registry.read().unwrap().is_empty()
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

    /// Changes the given fields of the org's plan; answers the plan as it now is, with the
    /// log position of the change. Read and written under the config lock, so two changes of
    /// different fields both land.
    pub async fn change_plan(
        &self,
        org: OrgId,
        change: PlanChange,
    ) -> Result<(Plan, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        let plan = change.apply(self.registry.read().unwrap().plan(org));
        let pos = self
            .commit(vec![ConfigEvent::PlanSet { org_id: org, plan }])
            .await?;
        Ok((plan, pos))
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
        if let Some(list) = &new.allowed_origins {
            trailspark_core::tenancy::validate_origins(list).map_err(ConfigError::Invalid)?;
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
            allowed_origins: new.allowed_origins,
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
        if self.org_key(org, id)?.endpoint_type != EndpointType::ProductOrg {
            return Err(ConfigError::Invalid(
                "only product_org keys take a template".into(),
            ));
        }
        self.commit(vec![ConfigEvent::KeyTemplateSet { id, template }])
            .await?;
        Ok(self.registry.read().unwrap().key(id).cloned().unwrap())
    }

    /// Sets the browser origins allowed to send with key `id` of `org` (`None`: its type's
    /// default).
    pub async fn set_origins(
        &self,
        org: OrgId,
        id: u64,
        origins: Option<Vec<String>>,
    ) -> Result<ApiKey, ConfigError> {
        if let Some(list) = &origins {
            trailspark_core::tenancy::validate_origins(list).map_err(ConfigError::Invalid)?;
        }
        let _g = self.config_lock.lock().await;
        self.org_key(org, id)?;
        self.commit(vec![ConfigEvent::KeyOriginsSet { id, origins }])
            .await?;
        Ok(self.registry.read().unwrap().key(id).cloned().unwrap())
    }

    /// Key `id` as the registry holds it now, if it belongs to `org` (another org's key is
    /// not found, as an unknown one).
    pub fn org_key(&self, org: OrgId, id: u64) -> Result<ApiKey, ConfigError> {
        self.registry
            .read()
            .unwrap()
            .key(id)
            .filter(|k| k.org_id == org)
            .cloned()
            .ok_or_else(|| ConfigError::NotFound(format!("key {id}")))
    }
}
