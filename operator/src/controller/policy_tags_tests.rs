use super::*;
use crate::controller::naming::DEFAULT_TAG_SUFFIX;

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

fn semver(range: &str) -> TagSelection {
    TagSelection {
        semver: Some(range.into()),
        ..Default::default()
    }
}

fn pattern(regex: &str) -> TagSelection {
    TagSelection {
        pattern: Some(regex.into()),
        ..Default::default()
    }
}

fn newest(count: u32, sort_by: TagSort) -> NewestTags {
    NewestTags { count, sort_by }
}

fn newest_only(count: u32, sort_by: TagSort) -> TagSelection {
    TagSelection {
        newest: Some(newest(count, sort_by)),
        ..Default::default()
    }
}

fn with_newest(selection: TagSelection, count: u32, sort_by: TagSort) -> TagSelection {
    TagSelection {
        newest: Some(newest(count, sort_by)),
        ..selection
    }
}

fn selected(selection: &TagSelection, list: &[&str]) -> Vec<String> {
    select_tags(selection, &tags(list), usize::MAX)
        .unwrap()
        .selected
}

#[test]
fn the_issues_acceptance_case() {
    let list = ["1.2.3", "1.2.4", "2.0.0", "latest", "v1.3.0-rc.1"];
    for range in [">=1.2.0, <2.0.0", "^1.2"] {
        let outcome = select_tags(&semver(range), &tags(&list), 10).unwrap();
        assert_eq!(outcome.selected, tags(&["1.2.4", "1.2.3"]), "{range}");
        assert_eq!(outcome.seen, 5, "{range}");
        assert_eq!(outcome.matched, 2, "{range}");
        // `latest` is not semver; `v1.3.0-rc.1` is, but a pre-release the range does not name.
        assert_eq!(outcome.skipped, 1, "{range}");
        assert_eq!(outcome.cut_by_cap, 0, "{range}");
    }
}

/// (name, selection, tags, selected in order).
#[test]
fn selections() {
    use TagSort::*;
    let cases: Vec<(&str, TagSelection, Vec<&str>, Vec<&str>)> = vec![
        (
            "leading v matches and is kept",
            semver("^1.2"),
            vec!["v1.2.4", "1.1.0", "v2.0.0"],
            vec!["v1.2.4"],
        ),
        (
            "semver: newest first, by precedence not text",
            semver(">=1.0.0"),
            vec!["1.10.0", "1.9.0", "1.2.0", "v1.11.0"],
            vec!["v1.11.0", "1.10.0", "1.9.0", "1.2.0"],
        ),
        (
            "pre-release excluded by a range that names none",
            semver(">=1.0.0"),
            vec!["1.3.0-rc.1", "1.2.0"],
            vec!["1.2.0"],
        ),
        (
            "pre-release matched by a range that names one of the same version",
            semver(">=1.3.0-rc.0, <2.0.0"),
            vec!["1.3.0-rc.1", "1.3.0", "1.4.0-rc.1", "1.2.0"],
            vec!["1.3.0", "1.3.0-rc.1"],
        ),
        (
            "tags that are not semver are skipped",
            semver("*"),
            vec!["latest", "1.2", "vv1.2.3", "V1.2.3", "main-abc123", "1.0.0"],
            vec!["1.0.0"],
        ),
        (
            "semver ties: equal versions ordered by tag",
            semver("^1"),
            vec!["v1.2.3", "1.2.3+b", "1.2.3", "1.2.3+a"],
            vec!["1.2.3", "1.2.3+a", "1.2.3+b", "v1.2.3"],
        ),
        (
            "pattern: a match anywhere counts, ascending lexical order",
            pattern("alpine"),
            vec!["3.20-alpine", "3.19-alpine", "alpine", "3.20"],
            vec!["3.19-alpine", "3.20-alpine", "alpine"],
        ),
        (
            "pattern anchored",
            pattern(r"^v1\.[0-9]+$"),
            vec!["v1.2", "v1.10", "v1.2-debug", "xv1.3"],
            vec!["v1.10", "v1.2"],
        ),
        (
            "newest by semver: releases only, newest first",
            newest_only(2, Semver),
            vec!["1.0.0", "3.0.0-rc.1", "2.0.0", "latest", "v2.1.0"],
            vec!["v2.1.0", "2.0.0"],
        ),
        (
            "newest by semver with pattern: pre-releases the pattern admits count",
            with_newest(pattern("^3"), 2, Semver),
            vec!["3.0.0-rc.1", "3.0.0-rc.2", "2.0.0", "3.x"],
            vec!["3.0.0-rc.2", "3.0.0-rc.1"],
        ),
        (
            "newest matching a range",
            with_newest(semver("^1"), 3, Semver),
            vec!["1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0"],
            vec!["1.3.0", "1.2.0", "1.1.0"],
        ),
        (
            "alphabetical: descending, RFC 3339 timestamps newest first",
            newest_only(2, Alphabetical),
            vec![
                "2024-05-31T23-59-59Z",
                "2024-06-01T00-00-00Z",
                "2023-12-31T12-00-00Z",
            ],
            vec!["2024-06-01T00-00-00Z", "2024-05-31T23-59-59Z"],
        ),
        (
            "alphabetical with pattern",
            with_newest(pattern("^main-"), 5, Alphabetical),
            vec!["main-b", "main-a", "dev-z", "main-c"],
            vec!["main-c", "main-b", "main-a"],
        ),
        (
            "numerical: by value, not text; non-numeric skipped",
            newest_only(3, Numerical),
            vec!["9", "10", "100", "latest", "1.5", "-1", "20"],
            vec!["100", "20", "10"],
        ),
        (
            "numerical: beyond u64, and leading zeros",
            newest_only(2, Numerical),
            vec![
                "99999999999999999999999",
                "100000000000000000000000",
                "0099",
            ],
            vec!["100000000000000000000000", "99999999999999999999999"],
        ),
        (
            "numerical ties: equal values ordered by tag",
            newest_only(3, Numerical),
            vec!["7", "007", "07", "6"],
            vec!["007", "07", "7"],
        ),
        (
            "duplicates count once",
            newest_only(2, Alphabetical),
            vec!["b", "b", "a", "b"],
            vec!["b", "a"],
        ),
        (
            "newest count larger than the candidates",
            newest_only(100, Semver),
            vec!["1.0.0", "2.0.0"],
            vec!["2.0.0", "1.0.0"],
        ),
        (
            "default exclude: cosign, referrers and our own -soci tags",
            pattern("."),
            vec![
                "sha256-abc.sig",
                "sha256-abc",
                "v1.sig",
                "v1.att",
                "v1.sbom",
                "v1-soci",
                "v1",
            ],
            vec!["v1"],
        ),
        (
            "exclude is applied before newest",
            TagSelection {
                exclude: vec!["-debug$".into()],
                ..newest_only(2, Alphabetical)
            },
            vec!["c-debug", "b", "a", "d-debug"],
            vec!["b", "a"],
        ),
        (
            "exclude is applied before semver",
            TagSelection {
                exclude: vec![r"^1\.2\.4$".into()],
                ..semver("^1.2")
            },
            vec!["1.2.3", "1.2.4"],
            vec!["1.2.3"],
        ),
        (
            "an explicit empty exclude excludes nothing",
            TagSelection {
                exclude: vec![],
                ..pattern("^v1")
            },
            vec!["v1-soci", "v1.sig"],
            vec!["v1-soci", "v1.sig"],
        ),
        ("an empty tag list", semver("^1"), vec![], vec![]),
    ];
    for (name, selection, list, want) in cases {
        let got = select_tags(&selection, &tags(&list), usize::MAX)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.selected, tags(&want), "{name}");
    }
}

#[test]
fn counts_seen_excluded_skipped_and_matched() {
    let selection = with_newest(pattern("^[0-9a-z]"), 2, TagSort::Numerical);
    let list = [
        "3", "3", "1", "2", "abc", "v1-soci", "x.sig", "_hidden", "10",
    ];
    let outcome = select_tags(&selection, &tags(&list), 10).unwrap();
    assert_eq!(
        outcome,
        TagSelectionOutcome {
            selected: tags(&["10", "3"]),
            seen: 8,
            excluded: 2,
            // `abc` (not a number); `_hidden` fails the pattern and is not counted.
            skipped: 1,
            matched: 2,
            cut_by_cap: 0,
        }
    );
    let empty = select_tags(&selection, &[], 10).unwrap();
    assert_eq!(empty, TagSelectionOutcome::default());
}

#[test]
fn the_cap_keeps_the_first_in_order_and_reports_the_rest() {
    let list = tags(&["1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0"]);
    let outcome = select_tags(&semver("^1"), &list, 2).unwrap();
    assert_eq!(outcome.selected, tags(&["1.3.0", "1.2.0"]));
    assert_eq!((outcome.matched, outcome.cut_by_cap), (4, 2));

    // `newest` is the spec's own choice: what it leaves out is not cut by the cap.
    let outcome = select_tags(&with_newest(semver("^1"), 3, TagSort::Semver), &list, 10).unwrap();
    assert_eq!((outcome.matched, outcome.cut_by_cap), (3, 0));

    let outcome = select_tags(&pattern("^1"), &list, 1).unwrap();
    assert_eq!(outcome.selected, tags(&["1.0.0"]));
    assert_eq!((outcome.matched, outcome.cut_by_cap), (4, 3));

    let outcome = select_tags(&pattern("^1"), &list, 0).unwrap();
    assert!(outcome.selected.is_empty());
    assert_eq!((outcome.matched, outcome.cut_by_cap), (4, 4));
}

#[test]
fn the_order_of_the_input_does_not_matter() {
    let list = ["1.2.0", "v1.2.0", "1.10.0", "1.9.0", "1.2.0+x"];
    let mut reversed = list;
    reversed.reverse();
    for selection in [
        semver("^1"),
        pattern("1"),
        newest_only(3, TagSort::Alphabetical),
    ] {
        assert_eq!(selected(&selection, &list), selected(&selection, &reversed));
    }
}

#[test]
fn the_default_exclude_covers_the_default_target_suffix() {
    let selection = TagSelection::default();
    let own = format!("v1.2.3{DEFAULT_TAG_SUFFIX}");
    let outcome = select_tags(
        &TagSelection {
            semver: Some("*".into()),
            ..selection
        },
        &[own, "v1.2.3".into()],
        10,
    )
    .unwrap();
    assert_eq!(outcome.selected, tags(&["v1.2.3"]));
    assert_eq!(outcome.excluded, 1);
}

#[test]
fn an_absent_exclude_deserializes_to_the_default_and_an_empty_one_stays_empty() {
    let absent: TagSelection = serde_json::from_str(r#"{"semver": "^1"}"#).unwrap();
    assert_eq!(absent.exclude, default_exclude());
    let empty: TagSelection = serde_json::from_str(r#"{"semver": "^1", "exclude": []}"#).unwrap();
    assert!(empty.exclude.is_empty());
    let newest: TagSelection = serde_json::from_str(r#"{"newest": {"count": 3}}"#).unwrap();
    assert_eq!(
        newest.newest,
        Some(NewestTags {
            count: 3,
            sort_by: TagSort::Semver
        })
    );
    let camel: TagSelection =
        serde_json::from_str(r#"{"newest": {"count": 1, "sortBy": "Numerical"}}"#).unwrap();
    assert_eq!(camel.newest.unwrap().sort_by, TagSort::Numerical);
}

/// (selection, a piece of the error message).
#[test]
fn invalid_selections_say_what_to_change() {
    let long = "a".repeat(limits::MAX_PATTERN + 1);
    let cases: Vec<(TagSelection, &str)> = vec![
        (TagSelection::default(), "set semver, pattern or newest"),
        (
            TagSelection {
                pattern: Some("^v".into()),
                ..semver("^1")
            },
            "at most one of semver and pattern",
        ),
        (
            with_newest(semver("^1"), 3, TagSort::Alphabetical),
            "newest.sortBy is Alphabetical, but with semver",
        ),
        (
            newest_only(0, TagSort::Semver),
            "newest.count is 0: it must be between 1 and 100",
        ),
        (newest_only(101, TagSort::Semver), "newest.count is 101"),
        (
            semver("^1 || ^2"),
            "`||` (either of two ranges) is not supported",
        ),
        (semver("^v1.2"), "write versions without `v`"),
        (semver("latest"), "semver `latest` is not a valid range"),
        (semver(""), "semver is empty"),
        (
            semver(&"1".repeat(limits::MAX_SEMVER + 1)),
            "semver is 129 characters long: at most 128",
        ),
        (
            pattern("(abc"),
            "pattern `(abc` is not a valid regular expression: unclosed group (at character 1)",
        ),
        (pattern("ab[c"), "unclosed character class (at character 3)"),
        (pattern(&long), "pattern is 257 characters long"),
        (
            pattern(r"\w{100}\w{100}"),
            "pattern `\\w{100}\\w{100}` is too large once compiled (the limit is 1 MiB)",
        ),
        (
            TagSelection {
                exclude: vec!["ok".into(), "*bad".into()],
                ..semver("^1")
            },
            "exclude[1] `*bad` is not a valid regular expression: repetition operator missing expression",
        ),
        (
            TagSelection {
                exclude: vec!["x".into(); limits::MAX_EXCLUDES + 1],
                ..semver("^1")
            },
            "exclude has 17 entries: at most 16",
        ),
        (
            TagSelection {
                exclude: vec![String::new()],
                ..semver("^1")
            },
            "exclude[0] is empty",
        ),
    ];
    for (selection, want) in cases {
        let err = validate(&selection).expect_err(want).to_string();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
        assert!(!err.contains('\n'), "{err:?} is not one line");
        // `select_tags` refuses what `validate` refuses.
        assert_eq!(
            select_tags(&selection, &tags(&["1.0.0"]), 1)
                .unwrap_err()
                .to_string(),
            err
        );
    }
}

#[test]
fn valid_selections_pass() {
    for selection in [
        semver(">=1.2.0, <2.0.0"),
        semver("~1.2.3"),
        pattern(&"a".repeat(limits::MAX_PATTERN)),
        newest_only(1, TagSort::Numerical),
        newest_only(100, TagSort::Alphabetical),
        with_newest(semver("^1"), 3, TagSort::Semver),
        with_newest(pattern("^main-"), 3, TagSort::Alphabetical),
        TagSelection {
            exclude: vec!["x".into(); limits::MAX_EXCLUDES],
            ..semver("^1")
        },
    ] {
        validate(&selection).unwrap_or_else(|e| panic!("{selection:?}: {e}"));
    }
}

/// Paths under `node` of strings without maxLength (or enum / const) and lists without maxItems.
fn unbounded(path: &str, node: &serde_json::Value, found: &mut Vec<String>) {
    match node {
        serde_json::Value::Object(map) => {
            let types: Vec<&str> = match map.get("type") {
                Some(serde_json::Value::String(t)) => vec![t.as_str()],
                Some(serde_json::Value::Array(ts)) => {
                    ts.iter().filter_map(|t| t.as_str()).collect()
                }
                _ => vec![],
            };
            let has = |key: &str| map.contains_key(key);
            if types.contains(&"string") && !has("maxLength") && !has("enum") && !has("const") {
                found.push(path.into());
            }
            if types.contains(&"array") && !has("maxItems") {
                found.push(path.into());
            }
            for (key, value) in map {
                unbounded(&format!("{path}.{key}"), value, found);
            }
        }
        serde_json::Value::Array(values) => {
            for (i, value) in values.iter().enumerate() {
                unbounded(&format!("{path}[{i}]"), value, found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_schema_bounds_every_string_and_list_and_carries_the_cel_rules() {
    let schema = serde_json::to_value(schemars::schema_for!(TagSelection)).unwrap();
    let mut found = Vec::new();
    unbounded("", &schema, &mut found);
    assert!(found.is_empty(), "unbounded: {found:?}");
    let p = &schema["properties"];
    assert_eq!(p["semver"]["maxLength"], 128);
    assert_eq!(p["pattern"]["maxLength"], 256);
    assert_eq!(p["exclude"]["maxItems"], 16);
    assert_eq!(p["exclude"]["items"]["maxLength"], 256);
    assert_eq!(p["exclude"]["default"], serde_json::json!(DEFAULT_EXCLUDE));
    let newest = &schema["$defs"]["NewestTags"]["properties"];
    assert_eq!(newest["count"]["minimum"], 1);
    assert_eq!(newest["count"]["maximum"], 100);
    assert_eq!(newest["sortBy"]["default"], "Semver");
    let rules = schema["x-kubernetes-validations"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert!(
        rules
            .iter()
            .all(|r| r["rule"].is_string() && r["message"].is_string())
    );
    // Every CEL message is also the message `validate` gives for the same mistake.
    for (selection, rule) in [
        (TagSelection::default(), 0),
        (
            TagSelection {
                pattern: Some("x".into()),
                ..semver("^1")
            },
            1,
        ),
    ] {
        assert_eq!(
            validate(&selection).unwrap_err().to_string(),
            rules[rule]["message"].as_str().unwrap()
        );
    }
}
