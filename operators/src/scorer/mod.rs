//! The deterministic, explainable scorer: a lead's tier from how well it fits the active ICP
//! model and how much intent its signals show, with every point traced to an input.
//!
//! The model follows what scoring products publish (see `docs/SCORING.md`): fit is points per
//! criterion met or violated on a −10…+10 weight scale, clamped to 0–100; intent is the sum of
//! each signal's importance decaying linearly to zero over the lookback window, capped per
//! signal type so one noisy type cannot dominate; product usage (plan, seats, MRR, trial,
//! recency) adds to engagement when the lead has a product org. The tier comes from a fit ×
//! engagement matrix, confidence from how much of the evidence the model asks for is known,
//! and the reasoning is rendered from the contributions, so the same inputs always give the
//! same text and every claim in it is a stored contribution.

mod fit;
mod intent;
mod reasoning;
#[cfg(test)]
mod tests;

use trailspark_core::rules::SignalType;
use trailspark_core::scoring::{Contribution, Criteria, Propensity, Score};

pub use reasoning::reasoning;

/// The account a lead belongs to, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountInput {
    pub name: Option<String>,
    pub domain: Option<String>,
    pub industry: Option<String>,
    pub market_segment: Option<String>,
    pub employee_count: Option<u64>,
    pub region: Option<String>,
}

/// A product org of the lead (the product's `productOrgInfo`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProductOrgInput {
    pub product_org_id: String,
    pub plan_id: Option<String>,
    pub plan_name: Option<String>,
    pub user_count: Option<u64>,
    pub mrr: Option<u64>,
    pub trial_status: Option<String>,
    pub last_active_at: Option<i64>,
}

/// A mapped signal in the lookback window.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalInput {
    /// The mapping rule's name (the signal's name).
    pub name: String,
    pub signal_type: SignalType,
    pub high_intent: bool,
    pub event_at: i64,
}

/// Everything the scorer reads about one lead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeadInput {
    pub email: Option<String>,
    pub title: Option<String>,
    pub account: AccountInput,
    pub product_orgs: Vec<ProductOrgInput>,
    pub signals: Vec<SignalInput>,
    pub now: i64,
    pub lookback_days: u32,
}

/// What the scorer answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub score: Score,
    pub confidence: u32,
    pub propensity: Propensity,
    pub fit: u32,
    pub intent: u32,
    pub usage: Option<u32>,
    pub contributions: Vec<Contribution>,
}

/// Fit buckets (6sense's strong/moderate/weak, at MadKudu-like cut-offs).
const STRONG_FIT: u32 = 70;
const MODERATE_FIT: u32 = 45;
/// Engagement buckets.
const HIGH_ENGAGEMENT: u32 = 60;
const MEDIUM_ENGAGEMENT: u32 = 30;

fn clamp(x: f64) -> u32 {
    x.round().clamp(0.0, 100.0) as u32
}

/// The tier from fit and engagement: hot needs high engagement and at least moderate fit (or
/// a strong fit with a high-intent signal and some engagement); warm needs one of the two to
/// be good; the rest is cold.
pub fn tier(fit: u32, engagement: u32, high_intent: bool) -> Score {
    let fit_ok = fit >= MODERATE_FIT;
    let strong = fit >= STRONG_FIT;
    if (engagement >= HIGH_ENGAGEMENT && fit_ok)
        || (high_intent && strong && engagement >= MEDIUM_ENGAGEMENT)
    {
        Score::Hot
    } else if engagement >= HIGH_ENGAGEMENT || (engagement >= MEDIUM_ENGAGEMENT && fit_ok) || strong
    {
        Score::Warm
    } else {
        Score::Cold
    }
}

/// Scores `lead` against `criteria`.
pub fn score(lead: &LeadInput, criteria: &Criteria) -> Scored {
    let fit = fit::fit(lead, criteria);
    let intent = intent::intent(lead, criteria);
    let usage = intent::usage(lead);
    let engagement = match usage.as_ref() {
        Some(u) => 0.7 * intent.score + 0.3 * u.score,
        None => intent.score,
    };
    let engagement = clamp(engagement);
    let fit_score = clamp(fit.score);
    let high = lead.signals.iter().any(|s| s.high_intent);
    let score = tier(fit_score, engagement, high);
    // Confidence: the mean of each dimension's evidence. Fit knows what share of the inputs
    // its criteria ask about; intent grows with the signals seen; usage is known or absent.
    let intent_conf = (50 + 10 * lead.signals.len() as u32).min(100);
    let mut parts = vec![fit.known_share, intent_conf];
    if usage.is_some() {
        parts.push(100);
    }
    let confidence = parts.iter().sum::<u32>() / parts.len() as u32;
    let account_fit = clamp(fit.account_score);
    let propensity = if account_fit >= STRONG_FIT && engagement >= HIGH_ENGAGEMENT {
        Propensity::High
    } else if account_fit >= MODERATE_FIT || engagement >= MEDIUM_ENGAGEMENT {
        Propensity::Medium
    } else {
        Propensity::Low
    };
    let mut contributions = fit.contributions;
    contributions.extend(intent.contributions);
    if let Some(u) = usage.as_ref() {
        contributions.extend(u.contributions.iter().cloned());
    }
    Scored {
        score,
        confidence,
        propensity,
        fit: fit_score,
        intent: clamp(intent.score),
        usage: usage.map(|u| clamp(u.score)),
        contributions,
    }
}

/// An account's propensity from its leads' latest evaluations (fit and engagement of each):
/// the account's fit is its best lead's, and its engagement the "champion" roll-up
/// (0.6 × the most engaged lead + 0.4 × the mean of the others).
pub fn account_propensity(leads: &[(u32, u32)]) -> Option<Propensity> {
    let fit = leads.iter().map(|(f, _)| *f).max()?;
    let mut engaged: Vec<u32> = leads.iter().map(|(_, e)| *e).collect();
    engaged.sort_unstable_by(|a, b| b.cmp(a));
    let rest = &engaged[1..];
    let engagement = if rest.is_empty() {
        f64::from(engaged[0])
    } else {
        0.6 * f64::from(engaged[0])
            + 0.4 * rest.iter().map(|e| f64::from(*e)).sum::<f64>() / rest.len() as f64
    };
    let engagement = clamp(engagement);
    Some(if fit >= STRONG_FIT && engagement >= HIGH_ENGAGEMENT {
        Propensity::High
    } else if fit >= MODERATE_FIT || engagement >= MEDIUM_ENGAGEMENT {
        Propensity::Medium
    } else {
        Propensity::Low
    })
}

/// Free-mail domains: a lead with one of these has no company domain, and its email's
/// domain names no account.
pub const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.uk",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "mail.com",
    "yandex.com",
    "yandex.ru",
    "zoho.com",
    "qq.com",
    "163.com",
];

/// The company domain of an email, unless it is a free-mail domain.
pub fn company_domain(email: &str) -> Option<String> {
    let domain = email.rsplit_once('@')?.1.trim().to_ascii_lowercase();
    if domain.is_empty() || !domain.contains('.') || FREE_MAIL.contains(&domain.as_str()) {
        None
    } else {
        Some(domain)
    }
}
