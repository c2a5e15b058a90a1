//! Every operation the server answers, as the OpenAPI document lists it: method, path
//! template, who may call it, its query parameters, its request body's type and its answer.
//!
//! The routers match paths with their own `match` arms; `tests/openapi.rs` keeps the two in
//! step both ways: it finds every path pattern in the routers' source and requires it here,
//! and it sends every operation listed here to a running server, which must serve it (and
//! answer 405 to the methods not listed).

use super::{list, one, page, Answer, Auth, Body, Op, Query};
use crate::http::admin::{KeyView, OrgView, TokenView, WhoAmI};
use crate::http::answers::{
    ArchiveState, Compacted, Conflict, EvaluationRun, EvaluatorState, OwnershipTransferred,
    Processed, Rehydrated, RetentionRun,
};
use crate::http::answers::{Deleted, OAuthStarted, SyncRequested};
use crate::http::api::actions::RuleView;
use crate::http::api::LeadAnswer;
use crate::services::crm::view::{ConnectionTest, IntegrationView};
use crate::services::destinations::view::{
    Deliveries, DestinationStatus, DestinationView, Retried,
};
use trailspark_core::scoring::{EvaluationView, ScoringSettings};
use trailspark_queries::explorer::groups::{GroupDetail, GroupView};
use trailspark_queries::explorer::leads::ProductOrgView;
use trailspark_queries::explorer::preview::Preview;
use trailspark_queries::explorer::signals::SignalRow;
use trailspark_queries::explorer::usage::UsageView;
use trailspark_queries::scoring::accounts::AccountView;
use trailspark_queries::scoring::context_view::EvaluationContext;
use trailspark_queries::scoring::views::{EvalRuleView, ModelView};

const WAIT_FOR: Query = ("wait_for", "integer", "answer only once the read models reflect this log position (from a 202's `log_position`), and the org's own rule edits with reprocess made by then have reached all of its history; 400 past the log's head, 504 after 10 s");
const LIMIT: Query = ("limit", "integer", "page size");
const CURSOR: Query = ("cursor", "string", "the previous page's `next_cursor`");

const SIGNAL: &str =
    r#"{"email":"ada@example.com","event":"Demo Requested","properties":{"form_id":"demo"}}"#;
const BATCH: &str =
    r#"[{"email":"ada@example.com","event":"visit"},{"anonymous_id":"a_1","event":"visit"}]"#;
const RULE: &str = r#"{"name":"Demo request","signal_type":"Form Fill","conditions":[{"field":"event","op":"equals","value":"Demo Requested"}],"mappings":[{"field":"email","path":"email"}],"reprocess":false}"#;

const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Op {
    Op {
        method,
        path,
        tag,
        summary,
        auth: Auth::Bearer,
        body: Body::Empty,
        ok: 200,
        query: &[],
        example: None,
        answer: Answer::Object,
    }
}

const fn get(path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    op("get", path, tag, summary).query(&[WAIT_FOR])
}

const fn post(path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    op("post", path, tag, summary)
}

impl Op {
    const fn auth(mut self, auth: Auth) -> Op {
        self.auth = auth;
        self
    }
    const fn body(mut self, body: Body) -> Op {
        self.body = body;
        self
    }
    const fn ok(mut self, status: u16) -> Op {
        self.ok = status;
        self
    }
    const fn query(mut self, query: &'static [Query]) -> Op {
        self.query = query;
        self
    }
    const fn answer(mut self, answer: Answer) -> Op {
        self.answer = answer;
        self
    }
    const fn example(mut self, json: &'static str) -> Op {
        self.example = Some(json);
        self
    }
}

use Body::{Any, Ndjson, Segment, Signal, Signals};

// Request bodies whose schema is the type the handler deserializes.
#[allow(non_upper_case_globals)]
mod bodies {
    use super::super::{typed, Body};
    use crate::http::{admin, api, destinations};
    use crate::services::{crm, destinations as dest};
    use trailspark_core::{plan, scoring, tenancy};

    pub const CreateOrg: Body = typed::<admin::CreateOrg>();
    pub const CreateKey: Body = typed::<admin::CreateKey>();
    pub const PatchKey: Body = typed::<admin::PatchKey>();
    pub const CreateToken: Body = typed::<admin::CreateToken>();
    pub const ProductOrgTemplate: Body = typed::<tenancy::ProductOrgTemplate>();
    pub const PlanChange: Body = typed::<plan::PlanChange>();
    pub const RehydrateBody: Body =
        typed::<trailspark_queries::explorer::retrieval::RehydrateBody>();
    pub const SqlBody: Body = typed::<api::SqlBody>();
    pub const SettingsChange: Body = typed::<scoring::settings::SettingsChange>();
    pub const EvalRuleDef: Body = typed::<scoring::eval_rules::EvalRuleDef>();
    pub const NewModel: Body = typed::<scoring::icp::NewModel>();
    pub const OAuthStart: Body = typed::<crm::OAuthStart>();
    pub const NewIntegration: Body = typed::<crm::NewIntegration>();
    pub const IntegrationChange: Body = typed::<crm::IntegrationChange>();
    pub const DestinationInput: Body = typed::<dest::DestinationInput>();
    pub const RetryBody: Body = typed::<destinations::RetryBody>();
    /// A mapping rule: its definition plus `reprocess`.
    pub const Rule: Body = Body::Rule;
}
use bodies::*;

/// A signal record: a reference to the schema `answer_schemas` generates from the archive's
/// columns.
fn signal_record(_: &mut super::Components) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    utoipa::openapi::RefOr::Ref(utoipa::openapi::Ref::from_schema_name("SignalRecord"))
}

/// The operations, grouped as the README groups them.
pub const OPS: &[Op] = &[
    // Operations.
    op("get", "/healthz", "operations", "Liveness: the log takes writes (and NATS is connected, when used)").auth(Auth::None),
    op("head", "/healthz", "operations", "Liveness, without a body").auth(Auth::None),
    op("get", "/readyz", "operations", "Readiness: replay caught up and the archive takes writes").auth(Auth::None),
    op("head", "/readyz", "operations", "Readiness, without a body").auth(Auth::None),
    op("get", "/metrics", "operations", "Prometheus metrics (text format)").auth(Auth::None),
    op("head", "/metrics", "operations", "Prometheus metrics, without a body").auth(Auth::None),
    op("get", "/openapi.json", "operations", "This document").auth(Auth::None),
    op("head", "/openapi.json", "operations", "This document, without a body").auth(Auth::None),
    // Ingestion (E1-E5) and analytics.js.
    post("/api/signal-staging/webhook/{key}", "ingestion", "E1: one signal (an array is a batch)").auth(Auth::PathKey).body(Signal).ok(202)
        .example(SIGNAL),
    op("put", "/api/signal-staging/webhook/{key}", "ingestion", "E1, as PUT (Segment Webhooks)").auth(Auth::PathKey).body(Signal).ok(202),
    op("patch", "/api/signal-staging/webhook/{key}", "ingestion", "E1, as PATCH (Segment Webhooks)").auth(Auth::PathKey).body(Signal).ok(202),
    post("/api/signal-staging/webhook/{source}/{key}", "ingestion", "E2: one signal labelled with its source").auth(Auth::PathKey).body(Signal).ok(202)
        .example(SIGNAL),
    op("put", "/api/signal-staging/webhook/{source}/{key}", "ingestion", "E2, as PUT").auth(Auth::PathKey).body(Signal).ok(202),
    op("patch", "/api/signal-staging/webhook/{source}/{key}", "ingestion", "E2, as PATCH").auth(Auth::PathKey).body(Signal).ok(202),
    post("/api/signal-staging/webhook/{key}/batch", "ingestion", "E3: a batch of up to 500 signals, with a result per item").auth(Auth::PathKey).body(Signals).ok(202)
        .example(BATCH),
    op("put", "/api/signal-staging/webhook/{key}/batch", "ingestion", "E3, as PUT").auth(Auth::PathKey).body(Signals).ok(202),
    op("patch", "/api/signal-staging/webhook/{key}/batch", "ingestion", "E3, as PATCH").auth(Auth::PathKey).body(Signals).ok(202),
    post("/api/signal-staging/bulk/{key}", "ingestion", "E4: NDJSON backfill, streamed").auth(Auth::PathKey).body(Ndjson).ok(202),
    post("/api/product-orgs/webhook/{key}", "ingestion", "E5: a product org update").auth(Auth::PathKey).body(Signal).ok(202)
        .example(r#"{"workspace_id":"ws_1","name":"Acme","plan":"team"}"#),
    post("/v1/track", "analytics.js", "Segment track").auth(Auth::WriteKey).body(Segment)
        .example(r#"{"type":"track","event":"Signed Up","userId":"u_1","anonymousId":"a_1","properties":{"plan":"team"}}"#),
    post("/v1/page", "analytics.js", "Segment page").auth(Auth::WriteKey).body(Segment),
    post("/v1/identify", "analytics.js", "Segment identify").auth(Auth::WriteKey).body(Segment)
        .example(r#"{"type":"identify","userId":"u_1","traits":{"email":"ada@example.com"}}"#),
    post("/v1/group", "analytics.js", "Segment group").auth(Auth::WriteKey).body(Segment),
    post("/v1/alias", "analytics.js", "Segment alias").auth(Auth::WriteKey).body(Segment),
    post("/v1/screen", "analytics.js", "Segment screen").auth(Auth::WriteKey).body(Segment),
    post("/v1/batch", "analytics.js", "Segment batch").auth(Auth::WriteKey).body(Segment)
        .example(r#"{"batch":[{"type":"page","anonymousId":"a_1","properties":{"path":"/pricing"}}]}"#),
    post("/v1/t", "analytics.js", "Segment track (analytics.js's short path)").auth(Auth::WriteKey).body(Segment),
    post("/v1/p", "analytics.js", "Segment page (short path)").auth(Auth::WriteKey).body(Segment),
    post("/v1/i", "analytics.js", "Segment identify (short path)").auth(Auth::WriteKey).body(Segment),
    post("/v1/g", "analytics.js", "Segment group (short path)").auth(Auth::WriteKey).body(Segment),
    post("/v1/a", "analytics.js", "Segment alias (short path)").auth(Auth::WriteKey).body(Segment),
    post("/v1/s", "analytics.js", "Segment screen (short path)").auth(Auth::WriteKey).body(Segment),
    post("/v1/b", "analytics.js", "Segment batch (short path)").auth(Auth::WriteKey).body(Segment),
    post("/v1/m", "analytics.js", "analytics.js's own telemetry: read and dropped").auth(Auth::None).body(Any),
    op("get", "/v1/projects/{key}/settings", "analytics.js", "analytics.js's settings for a write key").auth(Auth::PathKey),
    op("head", "/v1/projects/{key}/settings", "analytics.js", "The settings, without a body").auth(Auth::PathKey),
    op("get", "/js/trailspark.js", "analytics.js", "The first-party snippet").auth(Auth::None),
    op("head", "/js/trailspark.js", "analytics.js", "The snippet, without a body").auth(Auth::None),
    // Admin.
    op("get", "/api/admin/whoami", "admin", "The caller's org and role").answer(one::<WhoAmI>()),
    post("/api/admin/orgs", "admin", "Create an org (server administrator)").body(CreateOrg).ok(201).answer(one::<OrgView>())
        .example(r#"{"name":"Acme"}"#),
    op("get", "/api/admin/orgs", "admin", "List orgs (server administrator)").answer(list::<OrgView>("orgs")),
    post("/api/admin/keys", "admin", "Create an API key (Editor+); the answer adds `key` (and `secret`), shown only here").body(CreateKey).ok(201).answer(one::<KeyView>())
        .example(r#"{"name":"website","endpoint_type":"signal_staging","allowed_origins":["https://www.example.com"]}"#),
    op("get", "/api/admin/keys", "admin", "List API keys (Editor+)").answer(list::<KeyView>("keys")),
    op("delete", "/api/admin/keys/{id}", "admin", "Revoke an API key (Editor+)").answer(one::<KeyView>()),
    op("patch", "/api/admin/keys/{id}", "admin", "Change a key's allowed origins (Editor+)").body(PatchKey).answer(one::<KeyView>())
        .example(r#"{"allowed_origins":["https://*.example.com"]}"#),
    op("put", "/api/admin/keys/{id}/template", "admin", "Set a product-org key's field template (Editor+)").body(ProductOrgTemplate).answer(one::<KeyView>()),
    op("get", "/api/admin/plan", "admin", "The org's plan").answer(one::<trailspark_core::plan::Plan>()),
    op("put", "/api/admin/plan", "admin", "Change the plan (Admin+)").body(PlanChange).answer(one::<trailspark_core::plan::Plan>()),
    op("patch", "/api/admin/plan", "admin", "Change the plan (Admin+)").body(PlanChange).answer(one::<trailspark_core::plan::Plan>())
        .example(r#"{"raw_signal_limit":1000000,"overage":true}"#),
    post("/api/admin/tokens", "admin", "Create a token (Admin+); the answer adds `token`, shown only here").body(CreateToken).ok(201).answer(one::<TokenView>())
        .example(r#"{"role":"viewer","name":"dashboards"}"#),
    op("get", "/api/admin/tokens", "admin", "List tokens (Admin+)").answer(list::<TokenView>("tokens")),
    op("delete", "/api/admin/tokens/{id}", "admin", "Revoke a token (Admin+)").answer(one::<TokenView>()),
    post("/api/admin/tokens/{id}/transfer-ownership", "admin", "Make a token the Owner (Owner)").answer(one::<OwnershipTransferred>()),
    post("/api/admin/archive/compact", "admin", "Merge small archive files (server administrator)").answer(one::<Compacted>()),
    op("get", "/api/admin/archive", "admin", "The archive's state (server administrator)").answer(one::<ArchiveState>()),
    post("/api/admin/retention/run", "admin", "Run a retention pass now (server administrator)").answer(one::<RetentionRun>()),
    op("get", "/api/admin/evaluation", "admin", "The evaluator's state").answer(one::<EvaluatorState>()),
    post("/api/admin/evaluation/run", "admin", "Run an evaluation batch now (Admin+)").answer(one::<EvaluationRun>()),
    // Explorer, leads, rules, usage, SQL.
    get("/api/explorer/stats", "explorer", "Signal counts by status").answer(one::<trailspark_sinks::read_models::Stats>()),
    get("/api/explorer/signals", "explorer", "A page of one tab's signals").query(&[WAIT_FOR, ("tab", "string", "processed (default), failed or pending"), LIMIT, CURSOR]).answer(page::<SignalRow>("signals")),
    get("/api/explorer/signals/{id}", "explorer", "One signal, with its payload").answer(Answer::One(signal_record)),
    post("/api/explorer/process", "explorer", "Process pending signals against the rules now (Editor+)").answer(one::<Processed>()),
    post("/api/signals/rehydrate", "explorer", "Bring archived signals back into live state (Editor+)").body(RehydrateBody).answer(one::<Rehydrated>())
        .example(r#"{"from":"2026-01-01","to":"2026-01-31","ttl_hours":24}"#),
    get("/api/leads", "leads", "Look a lead up by one identifier").query(&[WAIT_FOR, ("email", "string", "one of email, user_id, anonymous_id, crm_id"), ("user_id", "string", ""), ("anonymous_id", "string", ""), ("crm_id", "string", "")]).answer(one::<LeadAnswer>()),
    get("/api/leads/{id}", "leads", "A lead, with its latest evaluation").answer(one::<LeadAnswer>()),
    get("/api/leads/{id}/timeline", "leads", "A lead's signals, newest first").query(&[WAIT_FOR, LIMIT, CURSOR]).answer(Answer::Page("signals", signal_record)),
    get("/api/leads/{id}/evaluation-context", "leads", "What an evaluation of the lead would read").query(&[WAIT_FOR, ("lookback_days", "integer", "days of signals")]).answer(one::<EvaluationContext>()),
    get("/api/signal-queue/groups", "signal queue", "Signal groups").query(&[WAIT_FOR, ("tab", "string", "unmapped (default) or mapped"), LIMIT, CURSOR]).answer(list::<GroupView>("groups")),
    get("/api/signal-queue/groups/{id}", "signal queue", "One group, with samples").answer(one::<GroupDetail>()),
    get("/api/signal-queue/groups/{id}/suggested-rule", "signal queue", "A mapping rule drafted from the group's samples").answer(Answer::RuleBody),
    get("/api/identity/conflicts", "leads", "Identifiers refused by the identity limits").query(&[WAIT_FOR, LIMIT, CURSOR]).answer(list::<Conflict>("conflicts")),
    get("/api/usage", "usage", "Meters of a month").query(&[WAIT_FOR, ("period", "string", "YYYY-MM (default: this month)")]).answer(one::<UsageView>()),
    get("/api/product-orgs/{id}", "leads", "A product org, with its users").answer(one::<ProductOrgView>()),
    get("/api/mapping-rules", "rules", "Mapping rules").answer(list::<RuleView>("rules")),
    post("/api/mapping-rules", "rules", "Create a mapping rule (Editor+)").body(Rule).ok(201).answer(one::<RuleView>())
        .example(RULE),
    post("/api/mapping-rules/preview", "rules", "Try a rule on recent signals without saving it (Editor+)").body(Rule).answer(one::<Preview>())
        .example(RULE),
    get("/api/mapping-rules/{id}", "rules", "One mapping rule").answer(one::<RuleView>()),
    op("put", "/api/mapping-rules/{id}", "rules", "Replace a mapping rule (Editor+)").body(Rule).answer(one::<RuleView>()),
    op("delete", "/api/mapping-rules/{id}", "rules", "Delete a mapping rule (Editor+)").answer(one::<RuleView>()),
    post("/api/sql", "sql", "A read-only SQL query over the org's signals").query(&[WAIT_FOR]).body(SqlBody)
        .example(r#"{"sql":"SELECT event_name, count(*) AS n FROM signals GROUP BY event_name"}"#),
    // Evaluation.
    get("/api/settings/lead-scoring", "evaluation", "Evaluation settings").answer(one::<ScoringSettings>()),
    op("put", "/api/settings/lead-scoring", "evaluation", "Change evaluation settings (Admin+)").body(SettingsChange).answer(one::<ScoringSettings>()),
    op("patch", "/api/settings/lead-scoring", "evaluation", "Change evaluation settings (Admin+)").body(SettingsChange).answer(one::<ScoringSettings>())
        .example(r#"{"min_signals":3,"lookback_days":90}"#),
    get("/api/evaluation-rules", "evaluation", "Evaluation rules").answer(list::<EvalRuleView>("rules")),
    post("/api/evaluation-rules", "evaluation", "Create an evaluation rule (Admin+)").body(EvalRuleDef).ok(201).answer(one::<EvalRuleView>())
        .example(r#"{"name":"No students","conditions":[{"field":"lead.title","op":"not_contains","value":"student","allow_if_empty":true}]}"#),
    get("/api/evaluation-rules/{id}", "evaluation", "One evaluation rule").answer(one::<EvalRuleView>()),
    op("put", "/api/evaluation-rules/{id}", "evaluation", "Replace an evaluation rule (Admin+)").body(EvalRuleDef).answer(one::<EvalRuleView>()),
    op("delete", "/api/evaluation-rules/{id}", "evaluation", "Delete an evaluation rule (Admin+)").answer(one::<EvalRuleView>()),
    get("/api/icp-models", "evaluation", "ICP models").answer(list::<ModelView>("models")),
    post("/api/icp-models", "evaluation", "Create an ICP model (Admin+)").body(NewModel).ok(201).answer(one::<ModelView>())
        .example(r#"{"name":"Mid-market SaaS","account_profile":"B2B SaaS companies with 200-1000 employees","criteria":{"industries":["saas"],"employee_ranges":[{"min":200,"max":1000}]}}"#),
    get("/api/icp-models/{id}", "evaluation", "One ICP model").answer(one::<ModelView>()),
    post("/api/icp-models/{id}/activate", "evaluation", "Make a model the active one (Admin+)").answer(one::<ModelView>()),
    post("/api/leads/{id}/evaluate", "evaluation", "Evaluate a lead now (Editor+)").answer(one::<EvaluationView>()),
    get("/api/leads/{id}/evaluations", "evaluation", "A lead's evaluations").answer(list::<EvaluationView>("evaluations")),
    get("/api/evaluations", "evaluation", "Evaluations, newest first").query(&[WAIT_FOR, ("score", "string", "hot, warm or cold"), ("since", "string", "RFC 3339"), LIMIT, CURSOR]).answer(page::<EvaluationView>("evaluations")),
    get("/api/accounts", "evaluation", "Accounts and their propensity").answer(list::<AccountView>("accounts")),
    get("/api/accounts/{id}", "evaluation", "One account").answer(one::<AccountView>()),
    // CRM integrations.
    post("/api/integrations/oauth/{kind}", "integrations", "Start an OAuth connection (Admin+)").body(OAuthStart).ok(201).answer(one::<OAuthStarted>()),
    op("get", "/api/oauth/callback/{kind}", "integrations", "The CRM's OAuth redirect (tied to its start by `state`)").auth(Auth::None).query(&[("code", "string", ""), ("state", "string", ""), ("error", "string", "")]).ok(201).answer(one::<IntegrationView>()),
    get("/api/integrations", "integrations", "Integrations").answer(list::<IntegrationView>("integrations")),
    post("/api/integrations", "integrations", "Connect a CRM (Admin+)").body(NewIntegration).ok(201).answer(one::<IntegrationView>()),
    get("/api/integrations/{id}", "integrations", "One integration").answer(one::<IntegrationView>()),
    op("patch", "/api/integrations/{id}", "integrations", "Change an integration (Admin+)").body(IntegrationChange).answer(one::<IntegrationView>()),
    op("delete", "/api/integrations/{id}", "integrations", "Disconnect (Admin+)").answer(one::<Deleted>()),
    post("/api/integrations/{id}/test", "integrations", "Check the connection and the mapped fields").answer(one::<ConnectionTest>()),
    post("/api/integrations/{id}/sync", "integrations", "Sync now (Editor+)").ok(202).answer(one::<SyncRequested>()),
    get("/api/integrations/{id}/mapping", "integrations", "The field mapping"),
    op("put", "/api/integrations/{id}/mapping", "integrations", "Replace the field mapping (Admin+)").body(Any),
    // Destinations.
    get("/api/destinations", "destinations", "Destinations").answer(list::<DestinationView>("destinations")),
    post("/api/destinations", "destinations", "Create a destination (Admin+)").body(DestinationInput).ok(201).answer(one::<DestinationView>()),
    get("/api/destinations/{id}", "destinations", "One destination").answer(one::<DestinationView>()),
    op("patch", "/api/destinations/{id}", "destinations", "Change a destination (Admin+)").body(DestinationInput).answer(one::<DestinationView>()),
    op("delete", "/api/destinations/{id}", "destinations", "Delete a destination (Admin+)").answer(one::<Deleted>()),
    get("/api/destinations/{id}/status", "destinations", "Delivery state and counts").answer(one::<DestinationStatus>()),
    get("/api/destinations/{id}/deliveries", "destinations", "Deliveries, newest first").query(&[WAIT_FOR, ("status", "string", "delivered, failed, unchanged"), ("lead_id", "string", ""), LIMIT]).answer(one::<Deliveries>()),
    post("/api/destinations/{id}/retry", "destinations", "Retry failed deliveries (Editor+)").body(RetryBody).ok(202).answer(one::<Retried>())
        .example(r#"{"lead_ids":[]}"#),
];
