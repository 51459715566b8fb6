//! containerd platform semantics (`github.com/containerd/platforms` v1.0.0-rc.5): `Normalize`,
//! `Parse`, `Format`, `FormatAll`, the strict matcher `OnlyStrict` (match and order), and
//! `DefaultSpec` — with the host given as a value instead of read from the running process, so
//! tests can play any host.
//!
//! `Normalize` maps an empty OS to Go's `runtime.GOOS`; that is [`GOOS`] here (the OS this
//! crate is compiled for, named the Go way).

use crate::oci::Platform;
use std::fmt;

/// Go's `runtime.GOOS` for the compilation target.
pub const GOOS: &str = if cfg!(target_os = "macos") {
    "darwin"
} else {
    std::env::consts::OS
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlatformError(pub String);

/// Go `strings.ToLower`: Unicode lower-casing rune by rune (U+0130 maps to `i`, the only rune
/// whose Rust lower case is two runes).
fn go_to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            if c == '\u{130}' {
                return 'i';
            }
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => l,
                _ => c,
            }
        })
        .collect()
}

/// `normalizeOS`: lower case, `macos` → `darwin`, empty → [`GOOS`].
pub fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return GOOS.to_string();
    }
    let os = go_to_lower(os);
    if os == "macos" { "darwin".into() } else { os }
}

/// `normalizeArch`: lower case and the known aliases and variant rules, e.g. `x86_64` → `amd64`
/// (variant `v1` dropped), `aarch64` → `arm64` (`8`/`v8`/`v8.0` dropped, `9`/`9.0`/`v9.0` → `v9`),
/// `armhf` → `arm/v7`, `armel` → `arm/v6`, `arm` with no variant → `v7`.
pub fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = go_to_lower(arch);
    let mut variant = go_to_lower(variant);
    let arch = match arch.as_str() {
        "i386" => {
            variant.clear();
            "386".to_string()
        }
        "x86_64" | "x86-64" | "amd64" => {
            if variant == "v1" {
                variant.clear();
            }
            "amd64".to_string()
        }
        "aarch64" | "arm64" => {
            match variant.as_str() {
                "8" | "v8" | "v8.0" => variant.clear(),
                "9" | "9.0" | "v9.0" => variant = "v9".into(),
                _ => {}
            }
            "arm64".to_string()
        }
        "armhf" => {
            variant = "v7".into();
            "arm".to_string()
        }
        "armel" => {
            variant = "v6".into();
            "arm".to_string()
        }
        "arm" => {
            match variant.as_str() {
                "" | "7" => variant = "v7".into(),
                "5" | "6" | "8" => variant = format!("v{variant}"),
                _ => {}
            }
            arch
        }
        _ => arch,
    };
    (arch, variant)
}

/// `platforms.Normalize`: OS and architecture normalised, OS features sorted and de-duplicated.
/// The OS version is kept as it is.
pub fn normalize(p: &Platform) -> Platform {
    let (architecture, variant) = normalize_arch(&p.architecture, &p.variant);
    let mut os_features = p.os_features.clone();
    os_features.sort();
    os_features.dedup();
    Platform {
        architecture,
        os: normalize_os(&p.os),
        os_version: p.os_version.clone(),
        os_features,
        variant,
    }
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

fn is_specifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn is_os_option_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%' | '-')
}

/// Go `url.PathUnescape` (only called when the text contains `%`); the result may hold bytes
/// that are not UTF-8, which Go keeps in the string and we replace like Go's JSON writer would.
fn path_unescape(s: &str) -> Result<String, PlatformError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let Some(hex) = hex else {
                let end = (i + 3).min(b.len());
                return Err(PlatformError(format!(
                    "invalid URL escape {:?}",
                    String::from_utf8_lossy(&b[i..end])
                )));
            };
            out.push(u8::from_str_radix(std::str::from_utf8(hex).expect("hex"), 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(crate::gojson::go_lossy_utf8(&out))
}

fn decode_os_option(v: &str) -> Result<String, PlatformError> {
    if v.contains('%') {
        path_unescape(v)
    } else {
        Ok(v.to_string())
    }
}

/// The OS part of a specifier: `os[(version[+feature…])]` (containerd's `osRe`).
fn parse_os_part(part: &str) -> Option<(&str, &str, &str)> {
    let (name, rest) = match part.find('(') {
        None => (part, None),
        Some(i) => (&part[..i], Some(&part[i + 1..])),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return None;
    }
    let Some(rest) = rest else {
        return Some((name, "", ""));
    };
    let inner = rest.strip_suffix(')')?;
    let (version, features) = match inner.find('+') {
        None => (inner, ""),
        Some(i) => (&inner[..i], &inner[i..]),
    };
    if !version.chars().all(is_os_option_char) {
        return None;
    }
    // `((?:\+[A-Za-z0-9_.%-]+)*)`: every feature non-empty.
    if !features.is_empty()
        && !features[1..]
            .split('+')
            .all(|f| !f.is_empty() && f.chars().all(is_os_option_char))
    {
        return None;
    }
    Some((name, version, features))
}

fn parse_os_features(s: &str) -> Result<Vec<String>, PlatformError> {
    let mut features = Vec::new();
    if s.is_empty() {
        return Ok(features);
    }
    for raw in s.split('+') {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(PlatformError("empty os feature: invalid argument".into()));
        }
        let feature = decode_os_option(raw)?;
        if !feature.is_empty() {
            features.push(feature);
        }
    }
    Ok(features)
}

/// `platforms.Parse`: `os[(version[+features])][/arch[/variant]]`, or a bare OS or
/// architecture, completed from `host` (Go's `runtime.GOOS`/`GOARCH` and CPU variant).
/// `linux/arm64/v8` keeps variant `v8`; `linux/arm64` has none; `linux/arm` has none.
pub fn parse(specifier: &str, host: &Platform) -> Result<Platform, PlatformError> {
    let invalid = |what: String| Err(PlatformError(format!("{what}: invalid argument")));
    if specifier.contains('*') {
        return invalid(format!("{specifier:?}: wildcards not yet supported"));
    }
    let parts: Vec<&str> = specifier.splitn(4, '/').collect();
    let mut p = Platform::default();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some((name, version, features)) = parse_os_part(part) else {
                return invalid(format!(
                    "{part:?} is an invalid OS component of {specifier:?}"
                ));
            };
            p.os = normalize_os(name);
            p.os_version = decode_os_option(version).map_err(|e| {
                PlatformError(format!(
                    "{specifier:?} has an invalid OS version {version:?}: {e}"
                ))
            })?;
            if !features.is_empty() {
                p.os_features = parse_os_features(&features[1..]).map_err(|e| {
                    PlatformError(format!("{specifier:?} has invalid OS features: {e}"))
                })?;
            }
        } else if part.is_empty() || !part.chars().all(is_specifier_char) {
            return invalid(format!("{part:?} is an invalid component of {specifier:?}"));
        }
    }
    match parts.len() {
        1 => {
            if is_known_os(&p.os) {
                p.architecture = host.architecture.clone();
                if p.architecture == "arm" && host.variant != "v7" {
                    p.variant = host.variant.clone();
                }
                return Ok(p);
            }
            let (arch, mut variant) = normalize_arch(parts[0], "");
            if arch == "arm" && variant == "v7" {
                variant.clear();
            }
            if is_known_arch(&arch) {
                p.architecture = arch;
                p.variant = variant;
                p.os = host.os.clone();
                return Ok(p);
            }
            invalid(format!(
                "{specifier:?}: unknown operating system or architecture"
            ))
        }
        2 => {
            let (arch, mut variant) = normalize_arch(parts[1], "");
            if arch == "arm" && variant == "v7" {
                variant.clear();
            }
            p.architecture = arch;
            p.variant = variant;
            Ok(p)
        }
        3 => {
            let (arch, mut variant) = normalize_arch(parts[1], parts[2]);
            if arch == "arm64" && variant.is_empty() {
                variant = "v8".into();
            }
            p.architecture = arch;
            p.variant = variant;
            Ok(p)
        }
        _ => invalid(format!("{specifier:?}: cannot parse platform specifier")),
    }
}

/// Go `path.Join` of non-empty elements (which cleans the result).
fn path_join(elems: &[&str]) -> String {
    let joined = elems
        .iter()
        .filter(|e| !e.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    if joined.is_empty() {
        return String::new();
    }
    let rooted = joined.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// `platforms.Format`: `os/arch[/variant]`, or `unknown` when the OS is empty.
pub fn format(p: &Platform) -> String {
    if p.os.is_empty() {
        return "unknown".into();
    }
    path_join(&[&p.os, &p.architecture, &p.variant])
}

fn encode_os_option(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '%' => out.push_str("%25"),
            '+' => out.push_str("%2B"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// `platforms.FormatAll`: like [`format()`], with `(version+features)` after the OS when set.
pub fn format_all(p: &Platform) -> String {
    if p.os.is_empty() {
        return "unknown".into();
    }
    if p.os_version.is_empty() && p.os_features.is_empty() {
        return path_join(&[&p.os, &p.architecture, &p.variant]);
    }
    let mut os = p.os.clone();
    let osv = encode_os_option(&p.os_version);
    let mut features = p.os_features.clone();
    features.sort();
    let mut formatted = String::new();
    let mut prev: Option<&str> = None;
    for f in &features {
        if f.is_empty() || prev == Some(f.as_str()) {
            continue;
        }
        prev = Some(f);
        if !formatted.is_empty() {
            formatted.push('+');
        }
        formatted.push_str(&encode_os_option(f));
    }
    if !osv.is_empty() || !formatted.is_empty() {
        os.push('(');
        os.push_str(&osv);
        if !formatted.is_empty() {
            os.push('+');
            os.push_str(&formatted);
        }
        os.push(')');
    }
    path_join(&[&os, &p.architecture, &p.variant])
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_all(self))
    }
}

/// A parsed Windows `major.minor.build[.…]` OS version (zero when unparseable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WindowsVersion {
    major: u8,
    minor: u8,
    build: u16,
}

fn windows_version(v: &str) -> WindowsVersion {
    if v.matches('.').count() < 2 {
        return WindowsVersion::default();
    }
    let mut it = v.splitn(4, '.');
    let (major, minor, build) = (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    );
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (
        digits(major).then(|| major.parse::<u8>().ok()).flatten(),
        digits(minor).then(|| minor.parse::<u8>().ok()).flatten(),
        digits(build).then(|| build.parse::<u16>().ok()).flatten(),
    ) {
        (Some(major), Some(minor), Some(build)) => WindowsVersion {
            major,
            minor,
            build,
        },
        _ => WindowsVersion::default(),
    }
}

/// `checkWindowsHostAndContainerCompat`.
fn windows_compatible(host: WindowsVersion, ctr: WindowsVersion) -> bool {
    const LTSC2022: u16 = 20348;
    const LTSC2025: u16 = 26100;
    const COMPAT_LTSC: [u16; 2] = [LTSC2022, LTSC2025];
    if host.major != ctr.major || host.minor != ctr.minor {
        return false;
    }
    if host.build < LTSC2022 {
        return host.build == ctr.build;
    }
    let mut supported = LTSC2022;
    for i in (0..COMPAT_LTSC.len()).rev() {
        if host.build >= COMPAT_LTSC[i] {
            supported = if i == 0 {
                COMPAT_LTSC[i]
            } else {
                COMPAT_LTSC[i - 1]
            };
            break;
        }
    }
    supported <= ctr.build && ctr.build <= host.build
}

/// `platforms.NewMatcher` of a platform (matches on normalised OS, architecture, variant and a
/// subset of OS features; on Windows also the OS version, ignoring a `win32k` feature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    platform: Platform,
    windows: Option<WindowsVersion>,
}

impl Matcher {
    pub fn new(p: &Platform) -> Self {
        let windows = (p.os == "windows").then(|| windows_version(&p.os_version));
        Self {
            platform: normalize(p),
            windows,
        }
    }

    pub fn matches(&self, candidate: &Platform) -> bool {
        let mut candidate = std::borrow::Cow::Borrowed(candidate);
        if self.windows.is_some()
            && let Some(i) = candidate.os_features.iter().position(|f| f == "win32k")
        {
            candidate.to_mut().os_features.remove(i);
        }
        let normalized = normalize(&candidate);
        let m = &self.platform;
        let os_version_ok = match self.windows {
            Some(host) => {
                host == WindowsVersion::default()
                    || candidate.os_version.is_empty()
                    || windows_compatible(host, windows_version(&candidate.os_version))
            }
            None => true,
        };
        if m.os != normalized.os
            || m.architecture != normalized.architecture
            || m.variant != normalized.variant
            || !os_version_ok
        {
            return false;
        }
        if normalized.os_features.is_empty() {
            return true;
        }
        if m.os_features.len() < normalized.os_features.len() {
            return false;
        }
        // Both sorted: every candidate feature must appear in the matcher's features.
        let mut j = 0;
        for feature in &normalized.os_features {
            let mut found = false;
            while j < m.os_features.len() {
                if *feature == m.os_features[j] {
                    found = true;
                    j += 1;
                    break;
                }
                if *feature < m.os_features[j] {
                    return false;
                }
                j += 1;
            }
            if !found {
                return false;
            }
        }
        true
    }
}

/// `platforms.OnlyStrict(p)`: matches only `p` (normalised, no compatible variants) and orders
/// candidates as containerd's `orderedPlatformComparer` with that one matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictMatcher {
    matcher: Matcher,
}

pub fn only_strict(p: &Platform) -> StrictMatcher {
    StrictMatcher {
        matcher: Matcher::new(&normalize(p)),
    }
}

impl StrictMatcher {
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.matcher.matches(candidate)
    }

    /// `Less(p1, p2)`: a matching platform sorts before a non-matching one, and of two matching
    /// ones the one with more OS features first; otherwise retried once without OS features.
    pub fn less(&self, p1: &Platform, p2: &Platform) -> bool {
        let (m1, m2) = (self.matches(p1), self.matches(p2));
        if m1 && !m2 {
            return true;
        }
        if m1 || m2 {
            return m1 && m2 && p1.os_features.len() > p2.os_features.len();
        }
        if !p1.os_features.is_empty() || !p2.os_features.is_empty() {
            let strip = |p: &Platform| Platform {
                os_features: Vec::new(),
                ..p.clone()
            };
            return self.less(&strip(p1), &strip(p2));
        }
        false
    }
}

/// `ociutil.DedupePlatforms`: keeps the first of platforms that strictly match (after
/// normalisation) an earlier one, in their original (raw) form.
pub fn dedupe(platforms: &[Platform]) -> Vec<Platform> {
    let mut matchers: Vec<StrictMatcher> = Vec::new();
    let mut out = Vec::new();
    for p in platforms {
        let n = normalize(p);
        if matchers.iter().any(|m| m.matches(&n)) {
            continue;
        }
        out.push(p.clone());
        matchers.push(only_strict(&n));
    }
    out
}

/// `platforms.DefaultSpec()` of a Go program built for `goos`/`goarch` on Linux: the variant is
/// the CPU variant for ARM (`v8` on every arm64 Linux host, as `/proc/cpuinfo` reports
/// "CPU architecture: 8"; `v7` assumed for 32-bit ARM) and empty otherwise.
pub fn default_spec(goos: &str, goarch: &str) -> Platform {
    let variant = match goarch {
        "arm64" => "v8",
        "arm" => "v7",
        _ => "",
    };
    Platform::new(goos, goarch, variant)
}

/// Go's `runtime.GOARCH` for the compilation target.
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips64" => "mips64",
        other => other,
    }
}

/// `platforms.DefaultSpec()` of this machine, as the upstream `soci` binary built for it would
/// see it (`linux/amd64`, or `linux/arm64/v8`).
pub fn host_platform() -> Platform {
    default_spec(GOOS, goarch())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: &str) -> Platform {
        Platform::new(os, arch, variant)
    }

    const AMD64: fn() -> Platform = || p("linux", "amd64", "");

    #[test]
    fn normalize_like_containerd() {
        assert_eq!(
            normalize(&p("Linux", "x86_64", "")),
            p("linux", "amd64", "")
        );
        assert_eq!(
            normalize(&p("linux", "amd64", "v1")),
            p("linux", "amd64", "")
        );
        assert_eq!(
            normalize(&p("linux", "amd64", "v3")),
            p("linux", "amd64", "v3")
        );
        assert_eq!(
            normalize(&p("linux", "aarch64", "v8")),
            p("linux", "arm64", "")
        );
        assert_eq!(
            normalize(&p("linux", "arm64", "8")),
            p("linux", "arm64", "")
        );
        assert_eq!(
            normalize(&p("linux", "arm64", "9.0")),
            p("linux", "arm64", "v9")
        );
        assert_eq!(normalize(&p("linux", "arm", "")), p("linux", "arm", "v7"));
        assert_eq!(normalize(&p("linux", "arm", "6")), p("linux", "arm", "v6"));
        assert_eq!(normalize(&p("linux", "armhf", "")), p("linux", "arm", "v7"));
        assert_eq!(normalize(&p("linux", "i386", "x")), p("linux", "386", ""));
        assert_eq!(
            normalize(&p("macOS", "arm64", "")),
            p("darwin", "arm64", "")
        );
        assert_eq!(normalize(&p("", "amd64", "")).os, GOOS);
        let f = Platform {
            os_features: vec!["b".into(), "a".into(), "b".into()],
            ..AMD64()
        };
        assert_eq!(normalize(&f).os_features, vec!["a", "b"]);
    }

    #[test]
    fn parse_like_containerd() {
        let amd = default_spec("linux", "amd64");
        let arm = default_spec("linux", "arm64");
        assert_eq!(
            parse("linux/arm64/v8", &amd).unwrap(),
            p("linux", "arm64", "v8")
        );
        assert_eq!(parse("linux/arm64", &amd).unwrap(), p("linux", "arm64", ""));
        assert_eq!(
            parse("linux/aarch64/8", &amd).unwrap(),
            p("linux", "arm64", "v8")
        );
        assert_eq!(parse("linux/arm", &amd).unwrap(), p("linux", "arm", ""));
        assert_eq!(
            parse("linux/arm/v7", &amd).unwrap(),
            p("linux", "arm", "v7")
        );
        assert_eq!(
            parse("Linux/X86_64", &amd).unwrap(),
            p("linux", "amd64", "")
        );
        assert_eq!(parse("linux", &amd).unwrap(), p("linux", "amd64", ""));
        assert_eq!(parse("linux", &arm).unwrap(), p("linux", "arm64", ""));
        assert_eq!(parse("arm64", &amd).unwrap(), p("linux", "arm64", ""));
        assert_eq!(parse("darwin", &arm).unwrap(), p("darwin", "arm64", ""));
        let w = parse("windows(10.0.17763+win32k+a%2Bb)/amd64", &amd).unwrap();
        assert_eq!(w.os_version, "10.0.17763");
        assert_eq!(w.os_features, vec!["win32k", "a+b"]);
        for bad in [
            "",
            "linux/*",
            "linux/amd64/v1/x",
            "foo",
            "linux/",
            "lin ux/amd64",
            "linux(1)x/amd64",
            "linux(+)/amd64",
            "linux/amd64/v#",
        ] {
            assert!(parse(bad, &amd).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_like_containerd() {
        assert_eq!(format(&p("linux", "arm64", "v8")), "linux/arm64/v8");
        assert_eq!(format(&p("linux", "amd64", "")), "linux/amd64");
        assert_eq!(format(&p("", "amd64", "")), "unknown");
        assert_eq!(format(&p("linux", "", "")), "linux");
        let w = Platform {
            os_version: "10.0".into(),
            os_features: vec!["b".into(), "a+".into()],
            ..p("windows", "amd64", "")
        };
        assert_eq!(format_all(&w), "windows(10.0+a%2B+b)/amd64");
    }

    #[test]
    fn strict_matching() {
        let m = only_strict(&p("linux", "arm64", "v8"));
        assert!(m.matches(&p("linux", "arm64", "")));
        assert!(m.matches(&p("linux", "aarch64", "v8")));
        assert!(!m.matches(&p("linux", "arm64", "v9")));
        assert!(!m.matches(&p("linux", "arm", "v8")));
        let amd = only_strict(&AMD64());
        assert!(amd.matches(&p("linux", "x86_64", "")));
        assert!(!amd.matches(&p("linux", "amd64", "v2")));
        assert!(!amd.matches(&p("linux", "386", "")));
        assert!(!amd.matches(&p("unknown", "unknown", "")));
        // Candidate features must be a subset of the matcher's.
        let fx = Platform {
            os_features: vec!["x".into()],
            ..AMD64()
        };
        assert!(!amd.matches(&fx));
        assert!(only_strict(&fx).matches(&AMD64()));
        assert!(only_strict(&fx).less(&fx, &AMD64()));
        assert!(!only_strict(&fx).less(&AMD64(), &fx));
        assert!(amd.less(&AMD64(), &p("linux", "arm64", "")));
        // Windows: OS version compatibility and win32k stripped from candidates.
        let win = Platform {
            os_version: "10.0.20348.1".into(),
            ..p("windows", "amd64", "")
        };
        let wm = only_strict(&win);
        let cand = |v: &str| Platform {
            os_version: v.into(),
            os_features: vec!["win32k".into()],
            ..p("windows", "amd64", "")
        };
        assert!(wm.matches(&cand("10.0.20348.5")));
        assert!(wm.matches(&cand("")));
        assert!(!wm.matches(&cand("10.0.17763.1")));
        assert!(!wm.matches(&cand("10.0.26100.1")));
    }

    #[test]
    fn dedupe_keeps_first_raw() {
        let ps = [
            p("linux", "x86_64", ""),
            p("linux", "amd64", ""),
            p("linux", "arm64", "v8"),
            p("linux", "arm64", ""),
        ];
        assert_eq!(
            dedupe(&ps),
            vec![p("linux", "x86_64", ""), p("linux", "arm64", "v8")]
        );
    }

    #[test]
    fn default_specs() {
        assert_eq!(default_spec("linux", "amd64"), p("linux", "amd64", ""));
        assert_eq!(default_spec("linux", "arm64"), p("linux", "arm64", "v8"));
        assert_eq!(host_platform().os, GOOS);
    }
}
