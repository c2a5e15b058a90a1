//! `serve --config FILE`: the settings of a TOML file apply, under the environment and the
//! flags, and a key that names no setting stops the server at start, named.

mod common;

use std::process::Command;

use common::*;

/// The file sets the SQL row limit and the environment overrides it for one run: each
/// server refuses exactly what its own limit says.
#[test]
fn the_file_applies_under_the_environment_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trailspark.toml");
    std::fs::write(
        &config,
        "# Fewer rows than the default\nsql_max_rows = 2\narchive_max_age_secs = 1\n",
    )
    .unwrap();
    let rows = |n: usize| {
        let values: Vec<String> = (0..n).map(|i| format!("({i})")).collect();
        format!("SELECT * FROM (VALUES {}) t(x)", values.join(", "))
    };

    let s = Server::start_configured(&dir.path().join("a"), None, &[], |cmd| {
        cmd.arg("--config").arg(&config);
    });
    let t = ADMIN_TOKEN;
    assert_eq!(sql_as(&s, t, &rows(2), None).status(), 200);
    let r = sql_as(&s, t, &rows(3), None);
    assert_eq!(r.status(), 413, "the file's sql_max_rows = 2 applies");
    drop(s);

    // The environment wins over the file.
    let s = Server::start_configured(
        &dir.path().join("b"),
        None,
        &[("TRAILSPARK_SQL_MAX_ROWS", "3")],
        |cmd| {
            cmd.arg("--config").arg(&config);
        },
    );
    let t = ADMIN_TOKEN;
    assert_eq!(sql_as(&s, t, &rows(3), None).status(), 200);
    assert_eq!(sql_as(&s, t, &rows(4), None).status(), 413);
    drop(s);

    // A misspelt key stops the server before it does anything, and says which key.
    std::fs::write(&config, "sql_max_row = 2\n").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("c"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key `sql_max_row`"), "{stderr}");
    assert!(
        !dir.path().join("c").exists(),
        "nothing was created before the refusal"
    );
}
