//! Structured criteria read from a manually described ICP, for the criteria its author did
//! not give.
//!
//! The product turns "Describe Manually" text into a model with a language model. Without one,
//! we read what the text names plainly: industries, segments and regions from fixed
//! vocabularies, employee ranges written as numbers, seniorities and departments of the
//! personas, and the behaviours its signal descriptions mention. What it cannot read stays in
//! the text, which every evaluation context carries for an LLM scorer. Deterministic: the same
//! text always gives the same criteria.

use std::sync::OnceLock;

use regex::Regex;

use super::icp::{Criteria, EmployeeRange, NewModel, SignalCriterion};
use crate::rules::SignalType;

const INDUSTRIES: &[&str] = &[
    "software",
    "saas",
    "technology",
    "fintech",
    "financial services",
    "banking",
    "insurance",
    "healthcare",
    "healthcare technology",
    "biotech",
    "pharmaceuticals",
    "professional services",
    "consulting",
    "manufacturing",
    "retail",
    "e-commerce",
    "ecommerce",
    "education",
    "government",
    "media",
    "telecommunications",
    "logistics",
    "real estate",
    "hospitality",
    "energy",
    "non-profit",
    "nonprofit",
    "cybersecurity",
    "marketing",
    "agency",
    "agencies",
];

const SEGMENTS: &[&str] = &[
    "enterprise",
    "mid-market",
    "midmarket",
    "smb",
    "small business",
    "startup",
];

const REGIONS: &[&str] = &[
    "north america",
    "united states",
    "usa",
    "us",
    "canada",
    "europe",
    "emea",
    "uk",
    "united kingdom",
    "germany",
    "france",
    "dach",
    "nordics",
    "apac",
    "asia",
    "latin america",
    "latam",
    "australia",
    "anz",
    "middle east",
    "africa",
    "india",
    "japan",
];

const SENIORITIES: &[&str] = &[
    "vp",
    "vice president",
    "head",
    "director",
    "chief",
    "founder",
    "co-founder",
    "owner",
    "ceo",
    "cto",
    "cmo",
    "cfo",
    "coo",
    "cro",
    "cio",
    "ciso",
    "manager",
    "lead",
];

const DEPARTMENTS: &[&str] = &[
    "marketing",
    "sales",
    "revenue",
    "growth",
    "demand generation",
    "revops",
    "operations",
    "engineering",
    "product",
    "it",
    "security",
    "data",
    "finance",
    "procurement",
    "hr",
    "people",
    "customer success",
];

const NON_BUYERS: &[&str] = &[
    "student",
    "intern",
    "freelancer",
    "recruiter",
    "job seeker",
    "academic",
    "researcher",
    "competitor",
];

/// Behaviour words and what they name: a rule-name keyword, a signal type, and a weight.
const BEHAVIOURS: &[(&str, Option<&str>, Option<SignalType>, u32)] = &[
    ("pricing", Some("pricing"), None, 8),
    ("demo", Some("demo"), None, 9),
    ("trial", Some("trial"), None, 8),
    ("contact sales", Some("contact"), None, 9),
    ("webinar", Some("webinar"), None, 5),
    ("download", Some("download"), None, 4),
    ("case stud", Some("case stud"), None, 5),
    ("blog", Some("blog"), None, 3),
    ("careers", Some("career"), None, 4),
    ("job", Some("job"), None, 4),
    ("unsubscribe", Some("unsubscribe"), None, 6),
    ("support", Some("support"), None, 3),
    ("page view", None, Some(SignalType::PageView), 3),
    ("form", None, Some(SignalType::FormFill), 6),
    ("product usage", None, Some(SignalType::ProductActivity), 6),
    (
        "product activity",
        None,
        Some(SignalType::ProductActivity),
        6,
    ),
    ("meeting", None, Some(SignalType::SalesEvent), 8),
    ("email open", None, Some(SignalType::EmailOpen), 2),
    ("email click", None, Some(SignalType::EmailClick), 3),
];

/// The vocabulary words that occur in `text` as whole words (or with a plural `s`), in
/// vocabulary order.
fn words_in(text: &str, vocabulary: &[&str]) -> Vec<String> {
    let lower = format!(" {} ", normalise(text));
    vocabulary
        .iter()
        .filter(|w| lower.contains(&format!(" {w} ")) || lower.contains(&format!(" {w}s ")))
        .map(|w| w.to_string())
        .collect()
}

/// Lower case, with punctuation but `-` and `+` turned into spaces.
fn normalise(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '+' {
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

fn number(s: &str) -> Option<u64> {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    Some(if s.to_ascii_lowercase().ends_with('k') {
        n * 1000
    } else {
        n
    })
}

/// Employee ranges written as `200-1000 employees`, `200 to 1,000 employees`, `500+
/// employees`, `over 50 employees`, `fewer than 5000 employees`.
fn employee_ranges(text: &str) -> Vec<EmployeeRange> {
    static RANGE: OnceLock<Regex> = OnceLock::new();
    static OPEN: OnceLock<Regex> = OnceLock::new();
    let range = RANGE.get_or_init(|| {
        Regex::new(
            r"(?i)(\d[\d,]*k?)\s*(?:-|–|—|to)\s*(\d[\d,]*k?)\s*(?:employees|people|staff|fte)",
        )
        .expect("a valid pattern")
    });
    let open = OPEN.get_or_init(|| {
        Regex::new(r"(?i)(?:(over|more than|at least|above|fewer than|less than|under|up to)\s+(\d[\d,]*k?)|(\d[\d,]*k?)\s*\+)\s*(?:employees|people|staff|fte)")
            .expect("a valid pattern")
    });
    let mut out: Vec<EmployeeRange> = range
        .captures_iter(text)
        .filter_map(|c| {
            Some(EmployeeRange {
                min: Some(number(&c[1])?),
                max: Some(number(&c[2])?),
            })
        })
        .collect();
    for c in open.captures_iter(text) {
        let r = match (
            c.get(1).map(|m| m.as_str().to_lowercase()),
            c.get(2),
            c.get(3),
        ) {
            (Some(w), Some(n), _) => {
                let n = number(n.as_str());
                if matches!(w.as_str(), "fewer than" | "less than" | "under" | "up to") {
                    EmployeeRange { min: None, max: n }
                } else {
                    EmployeeRange { min: n, max: None }
                }
            }
            (None, _, Some(n)) => EmployeeRange {
                min: number(n.as_str()),
                max: None,
            },
            _ => continue,
        };
        out.push(r);
    }
    out.retain(|r| r.min.is_none() || r.max.is_none() || r.min <= r.max);
    out
}

fn behaviours(text: &str) -> Vec<SignalCriterion> {
    let lower = normalise(text);
    BEHAVIOURS
        .iter()
        .filter(|(word, ..)| lower.contains(word))
        .map(|(_, name, signal_type, weight)| SignalCriterion {
            name: name.map(str::to_string),
            signal_type: *signal_type,
            weight: *weight,
        })
        .collect()
}

/// The criteria of `m`: those it gives, and for each list it leaves empty, what its text
/// names. Returns the criteria and the names of the lists read from the text.
pub fn criteria(m: &NewModel) -> (Criteria, Vec<String>) {
    let given = m.criteria.clone().unwrap_or_default();
    let mut c = given.clone();
    let mut derived = Vec::new();
    let mut fill = |name: &str, empty: bool, found: bool| {
        if empty && found {
            derived.push(name.to_string());
            true
        } else {
            false
        }
    };
    let industries = words_in(&m.account_profile, INDUSTRIES);
    if fill(
        "industries",
        given.industries.is_empty(),
        !industries.is_empty(),
    ) {
        c.industries = industries;
    }
    let excluded = words_in(&m.account_detractors, INDUSTRIES);
    if fill(
        "excluded_industries",
        given.excluded_industries.is_empty(),
        !excluded.is_empty(),
    ) {
        c.excluded_industries = excluded;
    }
    let segments = words_in(&m.account_profile, SEGMENTS);
    if fill(
        "market_segments",
        given.market_segments.is_empty(),
        !segments.is_empty(),
    ) {
        c.market_segments = segments;
    }
    let ranges = employee_ranges(&m.account_profile);
    if fill(
        "employee_ranges",
        given.employee_ranges.is_empty(),
        !ranges.is_empty(),
    ) {
        c.employee_ranges = ranges;
    }
    let regions = words_in(&m.account_profile, REGIONS);
    if fill("regions", given.regions.is_empty(), !regions.is_empty()) {
        c.regions = regions;
    }
    let excluded = words_in(&m.account_detractors, REGIONS);
    if fill(
        "excluded_regions",
        given.excluded_regions.is_empty(),
        !excluded.is_empty(),
    ) {
        c.excluded_regions = excluded;
    }
    let seniorities = words_in(&m.contact_personas, SENIORITIES);
    if fill(
        "seniorities",
        given.seniorities.is_empty(),
        !seniorities.is_empty(),
    ) {
        c.seniorities = seniorities;
    }
    let titles = words_in(&m.contact_personas, DEPARTMENTS);
    if fill("titles", given.titles.is_empty(), !titles.is_empty()) {
        c.titles = titles;
    }
    let non_buyers = words_in(&m.contact_detractors, NON_BUYERS);
    if fill(
        "excluded_titles",
        given.excluded_titles.is_empty(),
        !non_buyers.is_empty(),
    ) {
        c.excluded_titles = non_buyers;
    }
    let positive = behaviours(&m.positive_signals);
    if fill(
        "positive_signals",
        given.positive_signals.is_empty(),
        !positive.is_empty(),
    ) {
        c.positive_signals = positive;
    }
    let negative = behaviours(&m.negative_signals);
    if fill(
        "negative_signals",
        given.negative_signals.is_empty(),
        !negative.is_empty(),
    ) {
        c.negative_signals = negative;
    }
    (c, derived)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(profile: &str, personas: &str, positive: &str) -> NewModel {
        serde_json::from_value(serde_json::json!({
            "name": "m", "account_profile": profile, "contact_personas": personas,
            "positive_signals": positive, "account_detractors": "Agencies and companies in education.",
            "contact_detractors": "Students and recruiters", "negative_signals": "blog-only visits, unsubscribes"}))
        .unwrap()
    }

    #[test]
    fn reads_the_documented_example() {
        let m = model(
            "Mid-market B2B SaaS companies in North America with 200–1000 employees, on Salesforce, \
             in technology, professional services and healthcare technology.",
            "VPs of Marketing and Heads of Revenue Operations; the CMO signs.",
            "Pricing page visits, demo requests and product usage during a trial.",
        );
        let (c, derived) = criteria(&m);
        assert_eq!(c.market_segments, ["mid-market"]);
        assert!(c.industries.contains(&"saas".to_string()));
        assert!(c.industries.contains(&"healthcare technology".to_string()));
        assert!(c.industries.contains(&"professional services".to_string()));
        assert_eq!(c.regions, ["north america"]);
        assert_eq!(
            c.employee_ranges,
            [EmployeeRange {
                min: Some(200),
                max: Some(1000)
            }]
        );
        assert!(c.seniorities.contains(&"cmo".to_string()));
        assert!(c.seniorities.contains(&"vp".to_string()));
        assert!(c.seniorities.contains(&"head".to_string()));
        assert!(c.titles.contains(&"marketing".to_string()));
        assert!(c.titles.contains(&"revenue".to_string()));
        assert_eq!(c.excluded_industries, ["education", "agencies"]);
        assert_eq!(c.excluded_titles, ["student", "recruiter"]);
        assert!(c
            .positive_signals
            .iter()
            .any(|s| s.name.as_deref() == Some("demo")));
        assert!(c
            .positive_signals
            .iter()
            .any(|s| s.signal_type == Some(SignalType::ProductActivity)));
        assert!(c
            .negative_signals
            .iter()
            .any(|s| s.name.as_deref() == Some("unsubscribe")));
        assert!(derived.contains(&"employee_ranges".to_string()));
    }

    #[test]
    fn given_criteria_win_and_open_ranges_read() {
        let mut m = model(
            "Companies with 500+ employees or fewer than 20 people",
            "",
            "",
        );
        m.criteria = Some(Criteria {
            industries: vec!["fintech".into()],
            ..Criteria::default()
        });
        let (c, derived) = criteria(&m);
        assert_eq!(c.industries, ["fintech"]);
        assert!(!derived.contains(&"industries".to_string()));
        assert_eq!(
            c.employee_ranges,
            [
                EmployeeRange {
                    min: Some(500),
                    max: None
                },
                EmployeeRange {
                    min: None,
                    max: Some(20)
                }
            ]
        );
    }
}
