//! Which tags of a repository a `SociIndexPolicy` follows (its `repositories` source): the
//! [`TagSelection`] spec, its check ([`validate`]) and the pure choice ([`select_tags`]) from a
//! repository's tag list. No I/O: the caller lists the tags and acts on the outcome.
//!
//! The steps, in order: duplicates in the list are dropped; `exclude` drops tags; `semver` or
//! `pattern` (at most one) keeps the tags that match; `newest` orders what is left by its
//! `sortBy` and keeps the first `count`; the caller's cap keeps the first `cap` of that, and the
//! outcome says how many the cap cut.

use regex::{Regex, RegexBuilder};
use schemars::JsonSchema;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// The bounds the schema states, checked again by [`validate`] for an object that bypassed the
/// schema.
pub mod limits {
    pub const MAX_SEMVER: usize = 128;
    pub const MAX_PATTERN: usize = 256;
    pub const MAX_EXCLUDES: usize = 16;
    pub const MIN_NEWEST: u32 = 1;
    pub const MAX_NEWEST: u32 = 100;
    /// The compiled size of one regular expression (`regex::RegexBuilder::size_limit`).
    pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
}

/// `exclude` when the field is absent: cosign / referrers-fallback tags (`sha256-…`,
/// `….sig`, `….att`, `….sbom`) and tags with the default SOCI target suffix, our own output
/// (so a policy never indexes what it pushed).
pub const DEFAULT_EXCLUDE: [&str; 5] = [r"^sha256-", r"\.sig$", r"\.att$", r"\.sbom$", r"-soci$"];

fn default_exclude() -> Vec<String> {
    DEFAULT_EXCLUDE.iter().map(|e| e.to_string()).collect()
}

/// Which tags of a repository are followed. Set `semver` or `pattern` (at most one of them) to
/// follow every tag that matches, `newest` alone to follow the newest tags, or `newest` with
/// `semver` or `pattern` to follow the newest tags that match (e.g. the newest 3 of `^1`).
/// Tags matching `exclude` are never followed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.semver) || has(self.pattern) || has(self.newest)",
        "message": "set semver, pattern or newest: without one no tag is followed"
    },
    {
        "rule": "!(has(self.semver) && has(self.pattern))",
        "message": "set at most one of semver and pattern (newest may be combined with either)"
    },
    {
        "rule": "!has(self.semver) || !has(self.newest) || !has(self.newest.sortBy) || self.newest.sortBy == 'Semver'",
        "message": "with semver, newest.sortBy must be Semver (or left out)"
    }
]))]
pub struct TagSelection {
    /// A semver range (Cargo / `semver` crate syntax: `>=1.2.0, <2.0.0`, `^1.2`, `~1.2.3`;
    /// comparators are separated by commas, `||` is not supported). Tags that parse as semver
    /// `MAJOR.MINOR.PATCH[-pre][+build]`, a leading `v` allowed (and kept in the tag), and match
    /// the range are followed, newest first. Pre-releases match only if the range names a
    /// pre-release of the same `MAJOR.MINOR.PATCH` (`>=1.3.0-rc.0`). Tags that are not semver
    /// (`latest`, `1.2`) are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_SEMVER))]
    pub semver: Option<String>,
    /// A regular expression (Rust `regex` syntax) on tags; matching tags are followed, in
    /// lexical order. A match anywhere in the tag counts: anchor it (`^v1\.[0-9]+$`) to match
    /// the whole tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_PATTERN))]
    pub pattern: Option<String>,
    /// Follow only the newest `count` tags by `sortBy`, of those `semver` or `pattern` match
    /// (all tags not excluded when neither is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<NewestTags>,
    /// Tags never followed: regular expressions (Rust `regex` syntax, a match anywhere counts),
    /// applied before everything else. Default: `^sha256-`, `\.sig$`, `\.att$`, `\.sbom$`
    /// (cosign and referrers-fallback tags) and `-soci$` (the default SOCI target suffix: our own
    /// output). Setting the list replaces the default; `[]` excludes nothing.
    #[serde(default = "default_exclude")]
    #[schemars(
        length(max = limits::MAX_EXCLUDES),
        inner(length(min = 1, max = limits::MAX_PATTERN))
    )]
    pub exclude: Vec<String>,
}

impl Default for TagSelection {
    /// No semver, pattern or newest (so not valid as is), the default `exclude`.
    fn default() -> Self {
        Self {
            semver: None,
            pattern: None,
            newest: None,
            exclude: default_exclude(),
        }
    }
}

/// The newest `count` tags by `sortBy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewestTags {
    /// How many tags to follow (1 to 100).
    // `int32`: the API server knows no `uint32` format.
    #[schemars(range(min = limits::MIN_NEWEST, max = limits::MAX_NEWEST))]
    #[schemars(extend("format" = "int32"))]
    pub count: u32,
    /// How tags are ordered, newest first. `Semver` (default): by semver precedence; tags that
    /// are not semver are skipped, and so are pre-releases unless `pattern` is set (with
    /// `semver`, the range decides). `Alphabetical`: descending byte order, so `2024-06-01T…` is
    /// newer than `2024-05-31T…` (RFC 3339 timestamps sort right). `Numerical`: tags of ASCII
    /// digits only (`20240601`, `42`), by value; other tags are skipped (Flux's numerical policy
    /// instead fails as a whole on one tag that is not a number). Equal versions or numbers
    /// (`v1.2.3` and `1.2.3`, `007` and `7`) are ordered by tag, lexically.
    #[serde(default)]
    pub sort_by: TagSort,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TagSort {
    #[default]
    Semver,
    Alphabetical,
    Numerical,
}

impl fmt::Display for TagSort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TagSort::Semver => "Semver",
            TagSort::Alphabetical => "Alphabetical",
            TagSort::Numerical => "Numerical",
        })
    }
}

/// What [`select_tags`] chose, and the counts a status reports.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TagSelectionOutcome {
    /// The tags to follow: newest first when ordered by semver or number (a `semver` range, or
    /// `newest` with `Semver` / `Numerical`), descending for `Alphabetical`, otherwise (`pattern`
    /// alone) ascending lexical order. At most `cap`.
    pub selected: Vec<String>,
    /// Distinct tags in the list.
    pub seen: usize,
    /// Tags dropped by `exclude`.
    pub excluded: usize,
    /// Tags not excluded (and, with `pattern`, matching it) that the selection could not read:
    /// not semver under a `semver` range or `sortBy: Semver`, not a number under `Numerical`.
    pub skipped: usize,
    /// Tags the selection chose before the cap (with `newest`, at most its `count`).
    pub matched: usize,
    /// Of `matched`, how many the cap left out (the last in the order above).
    pub cut_by_cap: usize,
}

/// A selection that cannot be used, with a message saying what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagSelectionError {
    #[error("set semver, pattern or newest: without one no tag is followed")]
    NothingSet,
    #[error("set at most one of semver and pattern (newest may be combined with either)")]
    SemverAndPattern,
    #[error(
        "newest.sortBy is {0}, but with semver the newest tags are the highest versions: set sortBy to Semver or leave it out"
    )]
    SortWithSemver(TagSort),
    #[error(
        "newest.count is {0}: it must be between {min} and {max}",
        min = limits::MIN_NEWEST,
        max = limits::MAX_NEWEST
    )]
    CountOutOfRange(u32),
    #[error("{field} is empty: remove it or give it a value")]
    Empty { field: String },
    #[error("{field} is {len} characters long: at most {max} are allowed")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error(
        "exclude has {0} entries: at most {max} are allowed",
        max = limits::MAX_EXCLUDES
    )]
    TooManyExcludes(usize),
    #[error(
        "semver `{range}` is not a valid range: {reason} (ranges are Cargo syntax: `>=1.2.0, <2.0.0`, `^1.2`, `~1.2.3`)"
    )]
    InvalidSemver { range: String, reason: String },
    #[error("{field} `{pattern}` is not a valid regular expression: {reason}")]
    InvalidRegex {
        field: String,
        pattern: String,
        reason: String,
    },
    #[error(
        "{field} `{pattern}` is too large once compiled (the limit is {limit_mib} MiB): use smaller repetition counts, or ASCII classes such as [0-9] and [A-Za-z0-9_] rather than \\d and \\w",
        limit_mib = limit >> 20
    )]
    RegexTooLarge {
        field: String,
        pattern: String,
        limit: usize,
    },
}

/// Checks a selection as the schema and [`select_tags`] would: the combination of fields, the
/// bounds, and that the range and every regular expression compile.
pub fn validate(selection: &TagSelection) -> Result<(), TagSelectionError> {
    Compiled::new(selection).map(|_| ())
}

/// The tags of `tags` that `selection` follows, at most `cap` of them (the caller's cap on
/// images per policy; what it cuts is counted in [`TagSelectionOutcome::cut_by_cap`]).
/// Duplicates in `tags` count once; the order of `tags` does not matter.
pub fn select_tags(
    selection: &TagSelection,
    tags: &[String],
    cap: usize,
) -> Result<TagSelectionOutcome, TagSelectionError> {
    Ok(Compiled::new(selection)?.select(tags, cap))
}

enum Filter {
    All,
    Semver(VersionReq),
    Pattern(Regex),
}

struct Compiled {
    filter: Filter,
    newest: Option<NewestTags>,
    exclude: Vec<Regex>,
}

impl Compiled {
    fn new(selection: &TagSelection) -> Result<Self, TagSelectionError> {
        let TagSelection {
            semver,
            pattern,
            newest,
            exclude,
        } = selection;
        if semver.is_none() && pattern.is_none() && newest.is_none() {
            return Err(TagSelectionError::NothingSet);
        }
        if semver.is_some() && pattern.is_some() {
            return Err(TagSelectionError::SemverAndPattern);
        }
        if let Some(newest) = newest {
            if semver.is_some() && newest.sort_by != TagSort::Semver {
                return Err(TagSelectionError::SortWithSemver(newest.sort_by));
            }
            if !(limits::MIN_NEWEST..=limits::MAX_NEWEST).contains(&newest.count) {
                return Err(TagSelectionError::CountOutOfRange(newest.count));
            }
        }
        if exclude.len() > limits::MAX_EXCLUDES {
            return Err(TagSelectionError::TooManyExcludes(exclude.len()));
        }
        let filter = match (semver, pattern) {
            (Some(range), _) => {
                check_length("semver", range, limits::MAX_SEMVER)?;
                Filter::Semver(parse_range(range)?)
            }
            (None, Some(pattern)) => Filter::Pattern(compile("pattern", pattern)?),
            (None, None) => Filter::All,
        };
        let exclude = exclude
            .iter()
            .enumerate()
            .map(|(i, e)| compile(&format!("exclude[{i}]"), e))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            filter,
            newest: *newest,
            exclude,
        })
    }

    fn select(&self, tags: &[String], cap: usize) -> TagSelectionOutcome {
        let distinct: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
        let mut outcome = TagSelectionOutcome {
            seen: distinct.len(),
            ..Default::default()
        };
        // Ascending lexical order, duplicates gone: every later order starts from it.
        let candidates: Vec<&str> = distinct
            .into_iter()
            .filter(|tag| !self.exclude.iter().any(|e| e.is_match(tag)))
            .collect();
        outcome.excluded = outcome.seen - candidates.len();
        let candidates = candidates.into_iter().filter(|tag| match &self.filter {
            Filter::Pattern(pattern) => pattern.is_match(tag),
            Filter::All | Filter::Semver(_) => true,
        });
        let sort = match (&self.filter, self.newest) {
            (Filter::Semver(_), _) => Some(TagSort::Semver),
            (_, newest) => newest.map(|n| n.sort_by),
        };
        let mut ordered: Vec<&str> = match sort {
            None => candidates.collect(),
            Some(TagSort::Alphabetical) => candidates.rev().collect(),
            Some(TagSort::Semver) => {
                let mut versions = Vec::new();
                for tag in candidates {
                    let Some(version) = tag_version(tag) else {
                        outcome.skipped += 1;
                        continue;
                    };
                    let follows = match &self.filter {
                        Filter::Semver(range) => range.matches(&version),
                        // Releases only, as the range `*` has it.
                        Filter::All => version.pre.is_empty(),
                        Filter::Pattern(_) => true,
                    };
                    if follows {
                        versions.push((version, tag));
                    }
                }
                // Newest first; equal precedence (`v1.2.3` and `1.2.3`, build metadata) by tag.
                versions.sort_by(|(va, ta), (vb, tb)| vb.cmp_precedence(va).then(ta.cmp(tb)));
                versions.into_iter().map(|(_, tag)| tag).collect()
            }
            Some(TagSort::Numerical) => {
                let mut numbers = Vec::new();
                for tag in candidates {
                    match tag_number(tag) {
                        Some(digits) => numbers.push((digits, tag)),
                        None => outcome.skipped += 1,
                    }
                }
                // Largest first: more significant digits, then the digits; equal values by tag.
                numbers.sort_by(|(na, ta), (nb, tb)| {
                    (nb.len(), nb).cmp(&(na.len(), na)).then(ta.cmp(tb))
                });
                numbers.into_iter().map(|(_, tag)| tag).collect()
            }
        };
        if let Some(newest) = self.newest {
            ordered.truncate(newest.count as usize);
        }
        outcome.matched = ordered.len();
        outcome.selected = ordered.into_iter().take(cap).map(str::to_string).collect();
        outcome.cut_by_cap = outcome.matched - outcome.selected.len();
        outcome
    }
}

/// The version a tag names: semver, with one leading `v` allowed.
fn tag_version(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// A tag of ASCII digits only, its leading zeros removed (so length orders magnitude).
fn tag_number(tag: &str) -> Option<&str> {
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(tag.trim_start_matches('0'))
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), TagSelectionError> {
    let len = value.chars().count();
    if len == 0 {
        return Err(TagSelectionError::Empty {
            field: field.into(),
        });
    }
    if len > max {
        return Err(TagSelectionError::TooLong {
            field: field.into(),
            len,
            max,
        });
    }
    Ok(())
}

fn parse_range(range: &str) -> Result<VersionReq, TagSelectionError> {
    VersionReq::parse(range).map_err(|e| {
        let mut reason = e.to_string();
        if range.contains("||") {
            reason.push_str("; `||` (either of two ranges) is not supported: use one range");
        } else if range.split(',').any(|c| {
            c.trim_start_matches(['=', '>', '<', '~', '^', ' '])
                .starts_with('v')
        }) {
            reason.push_str(
                "; write versions without `v` (`^1.2`): tags with a leading `v` match anyway",
            );
        }
        TagSelectionError::InvalidSemver {
            range: range.into(),
            reason,
        }
    })
}

fn compile(field: &str, pattern: &str) -> Result<Regex, TagSelectionError> {
    check_length(field, pattern, limits::MAX_PATTERN)?;
    RegexBuilder::new(pattern)
        .size_limit(limits::REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => TagSelectionError::RegexTooLarge {
                field: field.into(),
                pattern: pattern.into(),
                limit,
            },
            regex::Error::Syntax(text) => TagSelectionError::InvalidRegex {
                field: field.into(),
                pattern: pattern.into(),
                reason: syntax_reason(&text, pattern),
            },
            other => TagSelectionError::InvalidRegex {
                field: field.into(),
                pattern: pattern.into(),
                reason: one_line(&other.to_string()),
            },
        })
}

/// The one-line reason of a regex syntax error. `regex` renders it over several lines (the
/// pattern, a caret line under the fault, `error: …`); a status message wants one line, so this
/// keeps the `error:` text and, for a one-line pattern, the column the caret points at.
fn syntax_reason(text: &str, pattern: &str) -> String {
    let Some(message) = text.lines().rev().find_map(|l| l.strip_prefix("error: ")) else {
        return one_line(text);
    };
    let column = (!pattern.contains('\n'))
        .then(|| {
            text.lines().find_map(|line| {
                let marks = line.trim_start();
                let indent = line.len() - marks.len();
                (marks.starts_with('^') && marks.chars().all(|c| c == '^' || c == '-'))
                    .then(|| indent.checked_sub(3))
                    .flatten()
            })
        })
        .flatten();
    match column {
        Some(column) => format!("{message} (at character {column})"),
        None => message.to_string(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "policy_tags_tests.rs"]
mod tests;
