//! Lead scoring's configuration changes: site settings, evaluation rules, ICP models, and the
//! evaluator's ticks and evaluations, each appended to the log before it takes effect.

use trailspark_core::admission::LimitReached;
use trailspark_core::scoring::{
    describe, month_of, EvalRule, EvalRuleDef, Evaluation, IcpModel, NewModel, ScoringEvent,
    ScoringSettings, SettingsChange,
};
use trailspark_core::tenancy::{ConfigEvent, OrgId};
use trailspark_core::LogEntry;

use super::{now_ms, ConfigError, Control};

impl Control {
    /// Changes the given fields of the org's site settings; answers them as they now are,
    /// with the log position of the change. A lead's cooldown is fixed on its evaluation, so
    /// a change never moves one that is running.
    pub async fn change_scoring_settings(
        &self,
        org: OrgId,
        change: SettingsChange,
    ) -> Result<(ScoringSettings, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        let current = self.registry.read().unwrap().scoring().settings(org);
        let settings = change
            .apply(current)
            .map_err(|e| ConfigError::InvalidField(e.field, e.message))?;
        let pos = self
            .commit(vec![ConfigEvent::Scoring(ScoringEvent::SettingsSet {
                org_id: org,
                settings,
                at: now_ms(),
            })])
            .await?;
        Ok((settings, pos))
    }

    pub async fn create_eval_rule(
        &self,
        org: OrgId,
        def: EvalRuleDef,
    ) -> Result<(EvalRule, u64), ConfigError> {
        def.validate().map_err(ConfigError::Invalid)?;
        let _g = self.config_lock.lock().await;
        let rule_id = self.registry.read().unwrap().scoring().next_rule_id();
        let event = ScoringEvent::EvalRuleCreated {
            org_id: org,
            rule_id,
            at: now_ms(),
            def,
        };
        self.commit_eval_rule(rule_id, event).await
    }

    pub async fn update_eval_rule(
        &self,
        org: OrgId,
        rule_id: u64,
        def: EvalRuleDef,
    ) -> Result<(EvalRule, u64), ConfigError> {
        def.validate().map_err(ConfigError::Invalid)?;
        let _g = self.config_lock.lock().await;
        self.eval_rule(org, rule_id)?;
        let event = ScoringEvent::EvalRuleUpdated {
            org_id: org,
            rule_id,
            at: now_ms(),
            def,
        };
        self.commit_eval_rule(rule_id, event).await
    }

    pub async fn delete_eval_rule(
        &self,
        org: OrgId,
        rule_id: u64,
    ) -> Result<(EvalRule, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        let rule = self.eval_rule(org, rule_id)?;
        let pos = self
            .commit(vec![ConfigEvent::Scoring(ScoringEvent::EvalRuleDeleted {
                org_id: org,
                rule_id,
                at: now_ms(),
            })])
            .await?;
        Ok((rule, pos))
    }

    /// The org's evaluation rule `rule_id`.
    pub fn eval_rule(&self, org: OrgId, rule_id: u64) -> Result<EvalRule, ConfigError> {
        let reg = self.registry.read().unwrap();
        match reg.scoring().rule(rule_id) {
            Some(r) if r.org_id == org => Ok(r.clone()),
            _ => Err(ConfigError::NotFound(format!("evaluation rule {rule_id}"))),
        }
    }

    async fn commit_eval_rule(
        &self,
        rule_id: u64,
        event: ScoringEvent,
    ) -> Result<(EvalRule, u64), ConfigError> {
        let pos = self.commit(vec![ConfigEvent::Scoring(event)]).await?;
        let rule = self
            .registry
            .read()
            .unwrap()
            .scoring()
            .rule(rule_id)
            .cloned();
        Ok((rule.expect("a committed rule event leaves the rule"), pos))
    }

    /// Finalizes an ICP model (Describe Manually): it becomes the org's active model and
    /// counts on the Models meter, which the plan's `icp_model_limit` bounds per month.
    pub async fn create_model(
        &self,
        org: OrgId,
        new: NewModel,
    ) -> Result<(IcpModel, u64), ConfigError> {
        new.validate().map_err(ConfigError::Invalid)?;
        let _g = self.config_lock.lock().await;
        let now = now_ms();
        let month = month_of(now);
        let (id, version) = {
            let reg = self.registry.read().unwrap();
            let plan = reg.plan(org);
            let used = reg.scoring().models_created(org, month);
            if !plan.allows(plan.icp_model_limit, used) {
                let l = LimitReached::new(plan.icp_model_limit, month, now);
                return Err(ConfigError::LimitReached(
                    format!(
                        "the plan's limit of {} ICP models in {} is reached",
                        plan.icp_model_limit,
                        l.period()
                    ),
                    l.retry_after_secs,
                ));
            }
            (
                reg.scoring().next_model_id(),
                reg.scoring().next_version(org),
            )
        };
        let (criteria, derived) = describe::criteria(&new);
        let model = IcpModel {
            id,
            org_id: org,
            version,
            name: new.name.trim().to_string(),
            method: new.method,
            account_profile: new.account_profile,
            account_detractors: new.account_detractors,
            contact_personas: new.contact_personas,
            contact_detractors: new.contact_detractors,
            positive_signals: new.positive_signals,
            negative_signals: new.negative_signals,
            criteria,
            derived,
            created_at: now,
        };
        let pos = self
            .commit(vec![ConfigEvent::Scoring(ScoringEvent::ModelCreated {
                model: Box::new(model.clone()),
            })])
            .await?;
        Ok((model, pos))
    }

    /// Makes the org's model `id` the active one.
    pub async fn activate_model(
        &self,
        org: OrgId,
        id: u64,
    ) -> Result<(IcpModel, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        let model = self.model(org, id)?;
        let pos = self
            .commit(vec![ConfigEvent::Scoring(ScoringEvent::ModelActivated {
                org_id: org,
                model_id: id,
                at: now_ms(),
            })])
            .await?;
        Ok((model, pos))
    }

    pub fn model(&self, org: OrgId, id: u64) -> Result<IcpModel, ConfigError> {
        let reg = self.registry.read().unwrap();
        match reg.scoring().model(id) {
            Some(m) if m.org_id == org => Ok(m.clone()),
            _ => Err(ConfigError::NotFound(format!("ICP model {id}"))),
        }
    }

    /// Appends a tick of the evaluator's clock (for every org, or one); answers its position.
    pub async fn tick(&self, org: Option<OrgId>, at: i64) -> Result<u64, ConfigError> {
        self.commit(vec![ConfigEvent::Scoring(ScoringEvent::Tick {
            at,
            org_id: org,
        })])
        .await
    }

    /// Appends evaluations; answers each one's log position.
    pub async fn append_evaluations(
        &self,
        evals: Vec<Evaluation>,
    ) -> Result<Vec<u64>, ConfigError> {
        let receipts = self
            .log
            .append(
                evals
                    .into_iter()
                    .map(|e| LogEntry::Evaluation(Box::new(e)))
                    .collect(),
            )
            .await?;
        Ok(receipts.iter().map(|r| r.position).collect())
    }
}
