use super::*;

fn cfg(events: u64) -> Config {
    Config {
        events,
        orgs: 4,
        ..Default::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_stream() {
    let a: Vec<String> = Generator::new(cfg(5_000)).map(|e| e.body).collect();
    let b: Vec<String> = Generator::new(cfg(5_000)).map(|e| e.body).collect();
    assert_eq!(a.len(), 5_000);
    assert_eq!(a, b);
    let c: Vec<String> = Generator::new(Config {
        seed: 7,
        ..cfg(5_000)
    })
    .map(|e| e.body)
    .collect();
    assert_ne!(a, c);
}

#[test]
fn the_mix_has_every_part_the_docs_promise() {
    let evs: Vec<Event> = Generator::new(cfg(50_000)).collect();
    let per_org = |o: usize| evs.iter().filter(|e| e.org == o).count();
    assert!(
        per_org(0) > per_org(1) && per_org(1) > per_org(3),
        "sizes are skewed"
    );
    let has = |s: &str| evs.iter().filter(|e| e.body.contains(s)).count();
    for needle in [
        "\"type\":\"identify\"",
        "\"type\":\"page\"",
        "\"type\":\"track\"",
        "\"type\":\"group\"",
        "\"mktLeadId\"",
        "\"form_submit\"",
    ] {
        assert!(has(needle) > 100, "{needle}: {}", has(needle));
    }
    let pos = evs.iter().filter(|e| e.kind == Kind::ProductOrg).count();
    assert!(pos > 100, "product-org updates: {pos}");
    let mut seen = std::collections::HashSet::new();
    let dups = evs
        .iter()
        .filter(|e| e.kind == Kind::Signal && !seen.insert((e.org, e.body.clone())))
        .count();
    assert!(
        (500..3_000).contains(&dups),
        "about 3% retries, got {dups} of 50,000"
    );
    let late = evs
        .iter()
        .filter_map(|e| {
            let v: Value = serde_json::from_str(&e.body).unwrap();
            v["timestamp"].as_str().map(str::to_string)
        })
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[1] < w[0])
        .count();
    assert!(late > 1_000, "out-of-order event times: {late}");
}
