//! Fit: how well the lead and its account match the ICP model's criteria.
//!
//! Starts at 50 (no evidence either way) and moves by points per criterion: a weight on the
//! −10…+10 scale times 2.5, so a criterion at full weight moves fit by 25. A criterion the
//! model does not state is not scored; a stated criterion whose input is unknown scores
//! nothing and lowers confidence instead.

use trailspark_core::scoring::{Contribution, Criteria};

use super::{company_domain, LeadInput};

pub(super) struct Fit {
    pub score: f64,
    /// The account's part alone (for propensity).
    pub account_score: f64,
    /// Of the inputs the criteria ask about, the share that is known (0–100).
    pub known_share: u32,
    pub contributions: Vec<Contribution>,
}

const POINTS_PER_WEIGHT: f64 = 2.5;

/// Whether `value` names one of `words`, as a whole word or phrase, ignoring case.
pub(super) fn names(value: &str, words: &[String]) -> Option<String> {
    let v = format!(" {} ", normalise(value));
    words
        .iter()
        .find(|w| {
            let w = normalise(w);
            !w.is_empty() && (v.contains(&format!(" {w} ")) || v.contains(&format!(" {w}s ")))
        })
        .cloned()
}

fn normalise(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn list(words: &[String]) -> String {
    words.join(", ")
}

struct Tally {
    points: f64,
    account: f64,
    asked: u32,
    known: u32,
    out: Vec<Contribution>,
}

impl Tally {
    fn add(&mut self, account: bool, input: &str, value: &str, criterion: String, weight: i32) {
        let points = f64::from(weight) * POINTS_PER_WEIGHT;
        self.points += points;
        if account {
            self.account += points;
        }
        self.out.push(Contribution {
            dimension: "fit".into(),
            input: input.into(),
            value: value.into(),
            criterion,
            weight,
            points,
        });
    }

    /// A criterion is asked about; `known` whether the lead has the input.
    fn ask(&mut self, known: bool) {
        self.asked += 1;
        self.known += u32::from(known);
    }
}

pub(super) fn fit(lead: &LeadInput, c: &Criteria) -> Fit {
    let mut t = Tally {
        points: 0.0,
        account: 0.0,
        asked: 0,
        known: 0,
        out: Vec::new(),
    };
    let a = &lead.account;

    if !c.industries.is_empty() || !c.excluded_industries.is_empty() {
        t.ask(a.industry.is_some());
        if let Some(ind) = &a.industry {
            if let Some(w) = names(ind, &c.excluded_industries) {
                t.add(
                    true,
                    "account.industry",
                    ind,
                    format!("excluded industry {w}"),
                    -10,
                );
            } else if let Some(w) = names(ind, &c.industries) {
                t.add(true, "account.industry", ind, format!("industry {w}"), 8);
            } else if !c.industries.is_empty() {
                let crit = format!("industry not in [{}]", list(&c.industries));
                t.add(true, "account.industry", ind, crit, -4);
            }
        }
    }
    if !c.market_segments.is_empty() {
        t.ask(a.market_segment.is_some());
        if let Some(seg) = &a.market_segment {
            match names(seg, &c.market_segments) {
                Some(w) => t.add(
                    true,
                    "account.market_segment",
                    seg,
                    format!("segment {w}"),
                    4,
                ),
                None => {
                    let crit = format!("segment not in [{}]", list(&c.market_segments));
                    t.add(true, "account.market_segment", seg, crit, -2)
                }
            }
        }
    }
    if !c.employee_ranges.is_empty() {
        t.ask(a.employee_count.is_some());
        if let Some(n) = a.employee_count {
            let ranges: Vec<String> = c
                .employee_ranges
                .iter()
                .map(|r| match (r.min, r.max) {
                    (Some(x), Some(y)) => format!("{x}-{y}"),
                    (Some(x), None) => format!("{x}+"),
                    (None, Some(y)) => format!("up to {y}"),
                    (None, None) => "any".into(),
                })
                .collect();
            let value = n.to_string();
            if c.employee_ranges.iter().any(|r| r.contains(n)) {
                let crit = format!("employees in {}", ranges.join(" or "));
                t.add(true, "account.employee_count", &value, crit, 6);
            } else {
                let crit = format!("employees outside {}", ranges.join(" or "));
                t.add(true, "account.employee_count", &value, crit, -4);
            }
        }
    }
    if !c.regions.is_empty() || !c.excluded_regions.is_empty() {
        t.ask(a.region.is_some());
        if let Some(r) = &a.region {
            if let Some(w) = names(r, &c.excluded_regions) {
                t.add(
                    true,
                    "account.region",
                    r,
                    format!("excluded region {w}"),
                    -8,
                );
            } else if let Some(w) = names(r, &c.regions) {
                t.add(true, "account.region", r, format!("region {w}"), 4);
            } else if !c.regions.is_empty() {
                let crit = format!("region not in [{}]", list(&c.regions));
                t.add(true, "account.region", r, crit, -2);
            }
        }
    }
    let personas = !c.titles.is_empty() || !c.seniorities.is_empty();
    if personas || !c.excluded_titles.is_empty() {
        t.ask(lead.title.is_some());
        if let Some(title) = &lead.title {
            if let Some(w) = names(title, &c.excluded_titles) {
                t.add(
                    false,
                    "lead.title",
                    title,
                    format!("contact detractor {w}"),
                    -10,
                );
            } else {
                if let Some(w) = names(title, &c.seniorities) {
                    t.add(false, "lead.title", title, format!("seniority {w}"), 4);
                }
                if let Some(w) = names(title, &c.titles) {
                    t.add(false, "lead.title", title, format!("persona {w}"), 4);
                }
                if personas
                    && names(title, &c.seniorities).is_none()
                    && names(title, &c.titles).is_none()
                {
                    t.add(
                        false,
                        "lead.title",
                        title,
                        "title outside the personas".into(),
                        -2,
                    );
                }
            }
        }
    }
    // A personal address names no company: a weak detractor (MadKudu-style override light).
    if let Some(email) = &lead.email {
        if company_domain(email).is_none() && email.contains('@') {
            let domain = email.rsplit_once('@').map_or("", |x| x.1);
            t.add(
                false,
                "lead.email",
                domain,
                "personal email domain".into(),
                -3,
            );
        }
    }
    // Nothing asked: no evidence either way.
    let known_share = (t.known * 100).checked_div(t.asked).unwrap_or(50);
    Fit {
        score: 50.0 + t.points,
        account_score: 50.0 + t.account,
        known_share,
        contributions: t.out,
    }
}
