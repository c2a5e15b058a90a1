//! The deterministic scorer on hand-made leads: tiers, decay, caps, confidence, and reasoning
//! that names only stored contributions.

use super::*;
use trailspark_core::scoring::{EmployeeRange, SignalCriterion};

const DAY: i64 = 86_400_000;

fn criteria() -> Criteria {
    Criteria {
        industries: vec!["saas".into(), "software".into()],
        excluded_industries: vec!["education".into()],
        employee_ranges: vec![EmployeeRange {
            min: Some(200),
            max: Some(1000),
        }],
        regions: vec!["north america".into()],
        seniorities: vec!["vp".into(), "head".into()],
        titles: vec!["marketing".into()],
        excluded_titles: vec!["student".into()],
        positive_signals: vec![SignalCriterion {
            name: Some("demo".into()),
            signal_type: None,
            weight: 9,
        }],
        negative_signals: vec![SignalCriterion {
            name: Some("careers".into()),
            signal_type: None,
            weight: 5,
        }],
        ..Criteria::default()
    }
}

fn signal(name: &str, t: SignalType, high: bool, days_ago: i64) -> SignalInput {
    SignalInput {
        name: name.into(),
        signal_type: t,
        high_intent: high,
        event_at: 100 * DAY - days_ago * DAY,
    }
}

fn good_account() -> AccountInput {
    AccountInput {
        name: Some("Acme".into()),
        domain: Some("acme.com".into()),
        industry: Some("B2B SaaS".into()),
        market_segment: None,
        employee_count: Some(450),
        region: Some("North America".into()),
    }
}

fn lead(account: AccountInput, title: &str, signals: Vec<SignalInput>) -> LeadInput {
    LeadInput {
        email: Some("ana@acme.com".into()),
        title: Some(title.into()),
        account,
        product_orgs: vec![],
        signals,
        now: 100 * DAY,
        lookback_days: 90,
    }
}

#[test]
fn a_fitting_lead_with_demo_requests_is_hot_and_its_reasoning_traces() {
    let l = lead(
        good_account(),
        "VP Marketing",
        vec![
            signal("Demo request", SignalType::FormFill, true, 1),
            signal("Pricing page", SignalType::PageView, false, 2),
            signal("Webinar", SignalType::EmailClick, false, 5),
        ],
    );
    let s = score(&l, &criteria());
    assert_eq!(s.score, Score::Hot, "{s:?}");
    assert!(s.fit >= 70 && s.intent >= 30, "{s:?}");
    assert!(s.confidence >= 70, "{}", s.confidence);
    let text = reasoning(&s, s.score, 70);
    assert!(text.starts_with("Hot: strong fit"), "{text}");
    // Every "input: criterion (points dimension)" phrase is a stored contribution.
    let parts = text.replace(". ", "|").replace("; ", "|");
    for part in parts
        .split('|')
        .filter(|p| p.contains(" fit)") || p.contains(" intent)"))
    {
        assert!(
            s.contributions.iter().any(|c| part.contains(&c.criterion)
                && part.contains(&format!("{} {})", c.points, c.dimension))),
            "{part:?} is not a contribution of {:?}",
            s.contributions
        );
    }
    assert!(text.contains("\"Demo request\""), "{text}");
}

#[test]
fn detractors_and_missing_data_pull_down_fit_and_confidence() {
    let mut edu = good_account();
    edu.industry = Some("Education".into());
    let l = lead(
        edu,
        "Student",
        vec![signal("Careers page", SignalType::PageView, false, 1)],
    );
    let s = score(&l, &criteria());
    assert_eq!(s.score, Score::Cold);
    assert!(s.fit < 45, "{}", s.fit);
    assert!(s
        .contributions
        .iter()
        .any(|c| c.criterion == "excluded industry education"));
    assert!(s
        .contributions
        .iter()
        .any(|c| c.criterion == "contact detractor student"));
    let text = reasoning(&s, s.score, 70);
    assert!(text.contains("Against it:"), "{text}");

    let unknown = lead(AccountInput::default(), "Engineer", vec![]);
    let s = score(&unknown, &criteria());
    assert!(
        s.confidence < 70,
        "little evidence, low confidence: {}",
        s.confidence
    );
}

#[test]
fn intent_decays_over_the_window_and_is_capped_per_type() {
    let c = Criteria::default();
    let fresh = score(
        &lead(
            good_account(),
            "x",
            vec![signal("Form", SignalType::FormFill, false, 0)],
        ),
        &c,
    );
    let old = score(
        &lead(
            good_account(),
            "x",
            vec![signal("Form", SignalType::FormFill, false, 45)],
        ),
        &c,
    );
    let gone = score(
        &lead(
            good_account(),
            "x",
            vec![signal("Form", SignalType::FormFill, false, 95)],
        ),
        &c,
    );
    assert_eq!((fresh.intent, old.intent, gone.intent), (8, 4, 0));
    let views: Vec<SignalInput> = (0..100)
        .map(|i| signal(&format!("Page {i}"), SignalType::PageView, false, 0))
        .collect();
    let flood = score(&lead(good_account(), "x", views), &c);
    assert_eq!(flood.intent, 40, "one type adds at most 40");
}

#[test]
fn product_usage_adds_engagement() {
    let c = Criteria::default();
    let mut l = lead(
        good_account(),
        "x",
        vec![signal("Login", SignalType::ProductActivity, false, 0)],
    );
    let without = score(&l, &c);
    l.product_orgs = vec![ProductOrgInput {
        product_org_id: "ws_1".into(),
        plan_id: Some("pro".into()),
        user_count: Some(12),
        mrr: Some(49900),
        trial_status: Some("converted".into()),
        last_active_at: Some(99 * DAY),
        ..ProductOrgInput::default()
    }];
    let with = score(&l, &c);
    assert_eq!(without.usage, None);
    assert_eq!(with.usage, Some(100));
    assert!(with
        .contributions
        .iter()
        .any(|c| c.input == "product_org.mrr" && c.value == "499.00"));
    assert!(with.confidence > without.confidence);
}

#[test]
fn tiers_propensity_and_domains() {
    assert_eq!(tier(80, 70, false), Score::Hot);
    assert_eq!(tier(40, 70, false), Score::Warm);
    assert_eq!(tier(75, 35, true), Score::Hot);
    assert_eq!(tier(75, 10, false), Score::Warm);
    assert_eq!(tier(50, 20, false), Score::Cold);
    assert_eq!(account_propensity(&[]), None);
    assert_eq!(
        account_propensity(&[(80, 90), (40, 50)]),
        Some(Propensity::High)
    );
    assert_eq!(account_propensity(&[(30, 10)]), Some(Propensity::Low));
    assert_eq!(company_domain("a@Acme.COM"), Some("acme.com".into()));
    assert_eq!(company_domain("a@gmail.com"), None);
    assert_eq!(company_domain("nope"), None);
}
