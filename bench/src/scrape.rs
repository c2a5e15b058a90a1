//! Reading a server's Prometheus histograms between two scrapes, so that a benchmark can
//! report the server's own view of one phase of its load (the stages of freshness, say)
//! next to what its client measured.

/// One histogram series' cumulative buckets: (upper bound in seconds, count), in the order
/// of the exposition (ascending, `+Inf` last).
pub type Buckets = Vec<(f64, f64)>;

/// The buckets of `name` (without `_bucket`) whose labels include `label` (such as
/// `stage="applied"`), from a text exposition.
pub fn buckets(text: &str, name: &str, label: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{");
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == label) {
            continue;
        }
        let Some(le) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        if let Ok(n) = value.trim().parse::<f64>() {
            out.push((le, n));
        }
    }
    out
}

/// What was observed between two scrapes of the same series: `after` minus `before`,
/// bucket by bucket (a series missing before counts as empty).
pub fn between(before: &Buckets, after: &Buckets) -> Buckets {
    after
        .iter()
        .map(|&(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, n)| *n);
            (le, n - was)
        })
        .collect()
}

/// The upper bound of the bucket holding the `p`-quantile (0..=1) of cumulative buckets,
/// in seconds: the quantile is at most this (and above the bucket before it). `None`
/// without observations.
pub fn quantile_bound(b: &Buckets, p: f64) -> Option<f64> {
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = (total * p).ceil().max(1.0);
    b.iter().find(|(_, n)| *n >= rank).map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE x_seconds histogram
x_seconds_bucket{stage=\"a\",le=\"0.001\"} 2
x_seconds_bucket{stage=\"a\",le=\"0.002\"} 5
x_seconds_bucket{stage=\"a\",le=\"+Inf\"} 6
x_seconds_bucket{stage=\"b\",le=\"0.001\"} 9
x_seconds_bucket{stage=\"b\",le=\"+Inf\"} 9
x_seconds_sum{stage=\"a\"} 0.5
";

    #[test]
    fn reads_one_series_and_bounds_its_quantiles() {
        let a = buckets(TEXT, "x_seconds", "stage=\"a\"");
        assert_eq!(a, vec![(0.001, 2.0), (0.002, 5.0), (f64::INFINITY, 6.0)]);
        assert_eq!(quantile_bound(&a, 0.3), Some(0.001));
        assert_eq!(quantile_bound(&a, 0.5), Some(0.002));
        assert_eq!(quantile_bound(&a, 0.99), Some(f64::INFINITY));
        let before = vec![(0.001, 2.0), (0.002, 2.0), (f64::INFINITY, 2.0)];
        let d = between(&before, &a);
        assert_eq!(d, vec![(0.001, 0.0), (0.002, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(quantile_bound(&d, 0.5), Some(0.002));
        assert_eq!(quantile_bound(&between(&a, &a), 0.5), None);
        assert!(buckets(TEXT, "x_seconds", "stage=\"c\"").is_empty());
    }
}
