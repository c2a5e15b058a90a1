//! The reasoning paragraph: rendered from the contributions alone, so every claim in it is a
//! stored contribution (its input, value, criterion and points) and the same evaluation
//! always reads the same.

use trailspark_core::scoring::{Contribution, Score};

use super::{Scored, MODERATE_FIT, STRONG_FIT};

fn bucket(fit: u32) -> &'static str {
    if fit >= STRONG_FIT {
        "strong"
    } else if fit >= MODERATE_FIT {
        "moderate"
    } else {
        "weak"
    }
}

fn title(s: Score) -> &'static str {
    match s {
        Score::Hot => "Hot",
        Score::Warm => "Warm",
        Score::Cold => "Cold",
    }
}

fn phrase(c: &Contribution) -> String {
    let sign = if c.points >= 0.0 { "+" } else { "" };
    let input = c.input.strip_prefix("signal:").map_or_else(
        || format!("{} {}", c.input, c.value),
        |name| format!("\"{name}\" ({})", c.value),
    );
    format!(
        "{input}: {} ({sign}{} {})",
        c.criterion, c.points, c.dimension
    )
}

/// How many contributions each side names.
const TOP: usize = 3;

/// The reasoning of an evaluation whose scorer answered `s`, stored as `stored` (the
/// confidence gate may have lowered it) with `min_confidence` the org's threshold.
pub fn reasoning(s: &Scored, stored: Score, min_confidence: u32) -> String {
    let mut text = format!(
        "{}: {} fit to the ICP ({}/100) and intent {}/100",
        title(stored),
        bucket(s.fit),
        s.fit,
        s.intent
    );
    if let Some(u) = s.usage {
        text.push_str(&format!(", product usage {u}/100"));
    }
    text.push('.');
    let mut pos: Vec<&Contribution> = s.contributions.iter().filter(|c| c.points > 0.0).collect();
    let mut neg: Vec<&Contribution> = s.contributions.iter().filter(|c| c.points < 0.0).collect();
    pos.sort_by(|a, b| b.points.total_cmp(&a.points).then(a.input.cmp(&b.input)));
    neg.sort_by(|a, b| a.points.total_cmp(&b.points).then(a.input.cmp(&b.input)));
    if pos.is_empty() {
        text.push_str(" Nothing in its data meets the ICP's criteria.");
    } else {
        let top: Vec<String> = pos.iter().take(TOP).map(|c| phrase(c)).collect();
        text.push_str(&format!(" For it: {}.", top.join("; ")));
    }
    if neg.is_empty() {
        text.push_str(" Nothing counts against it.");
    } else {
        let top: Vec<String> = neg.iter().take(TOP).map(|c| phrase(c)).collect();
        text.push_str(&format!(" Against it: {}.", top.join("; ")));
    }
    text.push_str(&format!(" Confidence {}%.", s.confidence));
    if stored != s.score {
        text.push_str(&format!(
            " The scorer's {} is stored as {} because confidence is below the {}% minimum.",
            s.score.as_str(),
            stored.as_str(),
            min_confidence
        ));
    }
    text
}
