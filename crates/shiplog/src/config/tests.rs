use super::*;

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shiplog.toml");
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

#[test]
fn defaults_file_and_env() {
    let c = load(None, &[]).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7070");
    let (_d, p) =
        write("[server]\nlisten = \"127.0.0.1:9000\"\n[projection]\nflush_interval = \"250ms\"\n");
    let c = load(Some(&p), &[]).unwrap();
    assert_eq!(c.server.listen.port(), 9000);
    assert_eq!(c.projection.flush_interval, Duration::from_millis(250));
    let env = vec![
        ("SHIPLOG_LISTEN".to_string(), "127.0.0.1:9100".to_string()),
        ("SHIPLOG_SERVER__BODY_LIMIT".to_string(), "1024".to_string()),
        (
            "SHIPLOG_PROJECTION__FLUSH_INTERVAL".to_string(),
            "2s".to_string(),
        ),
        ("HOME".to_string(), "/root".to_string()),
    ];
    let c = load(Some(&p), &env).unwrap();
    assert_eq!(c.server.listen.port(), 9100);
    assert_eq!(c.server.body_limit, 1024);
    assert_eq!(c.projection.flush_interval, Duration::from_secs(2));
}

#[test]
fn thresholds_budgets_and_dashboards_dir() {
    let c = load(None, &[]).unwrap();
    let th = c.effective_thresholds();
    assert_eq!(
        th.band("build_duration_s", Some("web"), Some("production"))
            .unwrap()
            .good,
        60.0
    );
    assert_eq!(
        th.band("cost_monthly_usd", None, None).unwrap().warning,
        1500.0
    );
    let (_d, p) = write(
            "dashboards_dir = \"dash\"\n[[thresholds]]\nmetric = \"build_duration_s\"\nproject = \"api\"\ngood = 20\nwarning = 40\n\
             [[budgets]]\nmonthly_usd = 300\n",
        );
    let c = load(Some(&p), &[]).unwrap();
    assert_eq!(c.dashboards_dir.as_deref(), Some(Path::new("dash")));
    let th = c.effective_thresholds();
    assert_eq!(
        th.band("build_duration_s", Some("api"), Some("production"))
            .unwrap()
            .good,
        20.0
    );
    // the config names the metric: its defaults are replaced
    assert!(th
        .band("build_duration_s", Some("web"), Some("production"))
        .is_none());
    assert_eq!(
        th.band("cost_monthly_usd", Some("web"), None)
            .unwrap()
            .warning,
        300.0
    );
    assert!(c.build_budgets().is_empty());
    // A build-only entry keeps the default cost budget; the build limits are read.
    let (_d, p) = write(
        "[[budgets]]\nproject = \"web\"\nbundle_bytes = 500000\nchunk_bytes = 200000\n\
             chunk = \"assets/index-*.js\"\nbuild_time = \"90s\"\ngrowth_percent = 5\n",
    );
    let c = load(Some(&p), &[]).unwrap();
    assert_eq!(
        c.effective_thresholds()
            .band("cost_monthly_usd", None, None)
            .unwrap()
            .warning,
        1500.0
    );
    let b = &c.build_budgets()[0];
    assert_eq!(b.project.as_deref(), Some("web"));
    assert_eq!(b.bundle_bytes, Some(500_000));
    assert_eq!(b.duration_ms, Some(90_000));
    assert_eq!(b.growth_percent, Some(5.0));
    assert_eq!(b.chunk.as_deref(), Some("assets/index-*.js"));
    for (bad, field) in [
        (
            "[[budgets]]\nproject = \"web\"\n",
            "budgets[0].set a cost limit",
        ),
        (
            "[[budgets]]\nchunk = \"x\"\nbundle_bytes = 1\n",
            "budgets[0].chunk:",
        ),
        (
            "[[budgets]]\ngrowth_percent = -1\n",
            "budgets[0].growth_percent:",
        ),
        ("[[budgets]]\nbundle_size = 1\n", "bundle_size"),
    ] {
        let (_d, p) = write(bad);
        let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
        assert!(e.contains(field), "{bad}: {e}");
    }
    assert!(th.band("cost_daily_usd", None, None).is_none());
    let (_d, p) = write("[[thresholds]]\nmetric = \"x\"\ngood = 5\nwarning = 1\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(
        e.contains("thresholds[0]") && e.contains("wrong order"),
        "{e}"
    );
    let (_d, p) = write("[[thresholds]]\nmetric = \"x\"\ngood = 5\nwarning = 9\ncolour = 1\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(e.contains("colour"), "{e}");
}

/// A syntax error on (or after) a line holding a secret names the file, line, column
/// and key, and never quotes the line: the secret must not reach stderr or the logs.
#[test]
fn syntax_errors_never_echo_a_secret() {
    const SECRET: &str = "Zq7Xv2Lm9Pw4Rt8K";
    let cases: Vec<(String, &str)> = vec![
        // the closing quote is missing
        (
            format!("[[tokens]]\nname = \"ci\"\nsecret = \"{SECRET}\nscopes = [\"ingest\"]\n"),
            "line 3, column 27 (key tokens[0].secret)",
        ),
        // garbage after the value, in the second token, after a comment and a table
        (
            format!(
                "# shiplog\n[server]\nlisten = \"127.0.0.1:7070\"\n[[tokens]]\nname = \"a\"\n\
                     secret = \"0123456789abcdef\"\nscopes = [\"read\"]\n\n[[tokens]] # ci\n\
                     name = \"ci\"\n  secret = '{SECRET}' x\nscopes = [\"ingest\"]\n"
            ),
            "line 11, column 31 (key tokens[1].secret)",
        ),
        // an unterminated multi-line string: the error is at the end of the file
        (
            format!("[[tokens]]\nname = \"ci\"\nsecret = \"\"\"\n{SECRET}\n"),
            "line 5, column 1 (in tokens[0])",
        ),
        // a line inside a multi-line string that looks like a header or a key is not named
        (
            format!(
                "[[tokens]]\nname = \"ci\"\nsecret = '''\n[server]\n{SECRET} = 1\n\
                     SECRET_TAIL = 2"
            ),
            "line 6, column 16 (in tokens[0])",
        ),
        // a duplicate key
        (
            format!("[[tokens]]\nname = \"ci\"\nsecret = \"{SECRET}\"\nsecret = \"{SECRET}\"\n"),
            "line 4, column 1 (key tokens[0].secret)",
        ),
    ];
    for (text, place) in cases {
        let (_d, p) = write(&text);
        let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
        assert!(e.contains("shiplog.toml") && e.contains(place), "{e}");
        assert!(e.contains("TOML syntax error"), "{e}");
        for i in 0..=SECRET.len() - 6 {
            assert!(!e.contains(&SECRET[i..i + 6]), "a secret in {e:?}");
        }
        assert!(!e.contains("SECRET_TAIL"), "{e}");
        assert!(!e.contains(" | "), "a quoted line in {e:?}");
    }
}

/// `secret_env` is held to the same minimum as `secret`; the error names the token
/// and the variable, not the value.
#[test]
fn secrets_from_the_environment_need_16_characters() {
    let (_d, p) = write(
            "[[tokens]]\nname = \"ci\"\nsecret_env = \"SHIPLOG_TEST_CI_TOKEN\"\nscopes = [\"ingest\"]\n",
        );
    let c = load(Some(&p), &[]).unwrap();
    let with = |value: Option<&'static str>| {
        c.tokens_from(move |var| {
            assert_eq!(var, "SHIPLOG_TEST_CI_TOKEN");
            value.map(Into::into)
        })
    };
    for short in ["", "short-s3cr3t", "0123456789abcde"] {
        let e = format!("{:#}", with(Some(short)).unwrap_err());
        assert!(
            e.contains("tokens[0] (ci)")
                && e.contains("SHIPLOG_TEST_CI_TOKEN")
                && e.contains("at least 16 characters"),
            "{e}"
        );
        if !short.is_empty() {
            assert!(!e.contains(short), "{e}");
        }
    }
    let e = format!("{:#}", with(None).unwrap_err());
    assert!(
        e.contains("SHIPLOG_TEST_CI_TOKEN") && e.contains("not set"),
        "{e}"
    );
    assert_eq!(with(Some("0123456789abcdef")).unwrap().len(), 1);
    // the file's secret: the same minimum, in characters
    let (_d, p) =
        write("[[tokens]]\nname = \"ci\"\nsecret = \"0123456789abcde\"\nscopes = [\"ingest\"]\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(e.contains("at least 16 characters"), "{e}");
    // a secret pasted into secret_env is not echoed as a variable name
    let (_d, p) = write(
            "[[tokens]]\nname = \"ci\"\nsecret_env = \"s3cr3t-0123-4567-89ab\"\nscopes = [\"ingest\"]\n",
        );
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(
        e.contains("secret_env must be the name of an environment variable")
            && !e.contains("s3cr3t"),
        "{e}"
    );
}

#[test]
fn rule_commands_are_told_which_variables_hold_secrets() {
    let (_d, p) = write(
        "[[tokens]]\nname = \"ci\"\nsecret_env = \"CI_TOKEN\"\nscopes = [\"ingest\"]\n\
             [[tokens]]\nname = \"pm\"\nsecret = \"0123456789abcdef\"\nscopes = [\"read\"]\n\
             [[rules]]\nname = \"hook\"\nkind = \"migration_failed\"\nproject = \"web\"\n\
             action = { webhook = \"https://example.com/h\", secret_env = \"HOOK_SECRET\" }\n",
    );
    let c = load(Some(&p), &[]).unwrap();
    assert_eq!(c.rules_settings.hide_env, ["CI_TOKEN", "HOOK_SECRET"]);
}

#[test]
fn errors_name_the_key_and_the_file() {
    let (_d, p) = write("[server]\nlisen = \"x\"\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(e.contains("lisen") && e.contains("shiplog.toml"), "{e}");
    let (_d, p) = write("[server]\nlisten = \"not an address\"\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(e.contains("listen") && e.contains("shiplog.toml"), "{e}");
    let (_d, p) = write("[[tokens]]\nname = \"ci\"\nscopes = [\"ingest\"]\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(e.contains("tokens[0]") && e.contains("secret"), "{e}");
    let (_d, p) =
        write("[[tokens]]\nname = \"ci\"\nsecret = \"0123456789abcdef\"\nscopes = [\"write\"]\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(e.contains("write") && e.contains("shiplog.toml"), "{e}");
    let (_d, p) = write("[pricing]\nprices_file = \"/nonexistent/prices.toml\"\n");
    let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
    assert!(
        e.contains("pricing.prices_file") && e.contains("/nonexistent/prices.toml"),
        "{e}"
    );
    let env = vec![("SHIPLOG_SERVER__BODY_LIMIT".to_string(), "lots".to_string())];
    let e = format!("{:#}", load(None, &env).unwrap_err());
    assert!(
        e.contains("body_limit") && e.contains("SHIPLOG_SERVER__BODY_LIMIT"),
        "{e}"
    );
}

#[test]
fn log_retention_is_off_by_default_and_checked() {
    let c = load(None, &[]).unwrap();
    assert!(!c.log.retention.policy().is_enabled());
    let (_d, p) = write("[log.retention]\nmax_age = \"7days\"\nmax_bytes = 1000000\n");
    let c = load(Some(&p), &[]).unwrap();
    let policy = c.log.retention.policy();
    assert_eq!(policy.max_age, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(policy.max_bytes, Some(1_000_000));
    for (text, field) in [
        ("[log.retention]\nmax_age = \"0s\"\n", "max_age"),
        ("[log.retention]\ninterval = \"0s\"\n", "interval"),
        ("[log.retention]\nmax_size = 5\n", "max_size"),
        (
            "[log]\nbackend = \"kafka\"\nbrokers = \"k:9092\"\n[log.retention]\nmax_bytes = 5\n",
            "log.retention",
        ),
    ] {
        let (_d, p) = write(text);
        let e = format!("{:#}", load(Some(&p), &[]).unwrap_err());
        assert!(e.contains(field), "{text}: {e}");
    }
}
