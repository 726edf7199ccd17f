//! Globs, in their two roles: tool names (`hide`, glob keys under `tools`) and the `glob`
//! predicate operator on argument values (paths such as `/srv/data/**`).

use std::borrow::Cow;
use std::collections::HashSet;

use globset::{GlobBuilder, GlobMatcher};

/// True when `s` uses glob syntax; anything else is matched as an exact name, which is both
/// faster and immune to surprises from characters a tool name is unlikely to contain.
pub(crate) fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// A compiled glob over tool names. `*` crosses `/` here so that `"*"` really hides every tool,
/// including namespaced names like `github/create_issue`.
///
/// Tool-name globs are matched on every call (hide list, glob keys), and nearly all of them are
/// plain wildcards (`delete_*`, `*_admin`); those are matched by a small byte-level wildcard
/// matcher (tens of times cheaper than a regex-backed `GlobMatcher`). Anything richer (`[..]`,
/// `{..}`, escapes, `/`) goes to globset. A property test checks that both agree.
#[derive(Clone, Debug)]
pub(crate) enum NameGlob {
    Wildcard(Box<[u8]>),
    Full(GlobMatcher),
}

impl NameGlob {
    pub(crate) fn new(pattern: &str) -> Result<NameGlob, String> {
        // Always compile with globset, so that what is accepted is exactly what globset accepts.
        let full = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| format!("invalid glob \"{pattern}\": {}", e.kind()))?;
        if pattern.bytes().any(|b| b"[]{}\\/,".contains(&b)) {
            Ok(NameGlob::Full(full))
        } else {
            Ok(NameGlob::Wildcard(pattern.as_bytes().into()))
        }
    }

    pub(crate) fn is_match(&self, name: &str) -> bool {
        match self {
            NameGlob::Wildcard(p) => wildcard_match(p, name.as_bytes()),
            NameGlob::Full(m) => m.is_match(name),
        }
    }
}

/// `*` matches any byte sequence, `?` exactly one byte (as globset's byte regexes do), anything
/// else itself. Linear backtracking to the last `*`: O(pattern x name) at worst.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                resume = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match resume {
                Some((star, at)) => {
                    p = star + 1;
                    n = at + 1;
                    resume = Some((star, at + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Compiles a glob over argument values: `*` stays within one `/`-separated segment and `**`
/// crosses them, as in shells, so `/srv/data/*` does not admit `/srv/data/a/b`.
pub(crate) fn value_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob \"{pattern}\": {}", e.kind()))
}

/// Resolves `.` and `..` segments and repeated slashes, lexically, before a `glob` predicate
/// looks at a value. The upstream resolves them too, so matching the raw text would let
/// `/srv/data/../../etc/passwd` pass a `/srv/data/**` requirement (and slip past a
/// `deny_if` on `/etc/**`). Strings without such segments are matched as they are.
pub(crate) fn normalize_path(s: &str) -> Cow<'_, str> {
    let needs_work = s.contains("//") || s.split('/').any(|seg| seg == "." || seg == "..");
    if !needs_work {
        return Cow::Borrowed(s);
    }
    let absolute = s.starts_with('/');
    let trailing = s.len() > 1 && s.ends_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                // Above the root there is nothing: "/.." is "/".
                _ if absolute => {}
                _ => out.push(".."),
            },
            seg => out.push(seg),
        }
    }
    let mut joined = String::with_capacity(s.len());
    if absolute {
        joined.push('/');
    }
    joined.push_str(&out.join("/"));
    if trailing && !out.is_empty() {
        joined.push('/');
    }
    Cow::Owned(joined)
}

/// A set of tool names and tool-name globs (the `hide` list).
#[derive(Debug, Default)]
pub(crate) struct NameSet {
    exact: HashSet<String>,
    globs: Vec<NameGlob>,
}

impl NameSet {
    pub(crate) fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<NameSet, String> {
        let mut set = NameSet::default();
        for entry in entries {
            if is_glob(entry) {
                set.globs.push(NameGlob::new(entry)?);
            }
            // Globs too: a tool literally named like the pattern is hidden as well.
            set.exact.insert(entry.to_owned());
        }
        Ok(set)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.exact.contains(name) || self.globs.iter().any(|g| g.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_globs_cross_slashes_value_globs_do_not() {
        let t = NameGlob::new("delete_*").unwrap();
        assert!(t.is_match("delete_user"));
        assert!(t.is_match("delete_a/b"));
        assert!(!t.is_match("undelete_user"));
        let v = value_glob("/srv/data/*").unwrap();
        assert!(v.is_match("/srv/data/x"));
        assert!(!v.is_match("/srv/data/x/y"));
        let vv = value_glob("/srv/data/**").unwrap();
        assert!(vv.is_match("/srv/data/x/y"));
        assert!(!vv.is_match("/srv/other/x"));
    }

    #[test]
    fn name_set() {
        let set = NameSet::new(["drop_table", "delete_*", "*_admin"]).unwrap();
        for (name, hidden) in [
            ("drop_table", true),
            ("drop_tables", false),
            ("delete_user", true),
            ("user_admin", true),
            ("list_users", false),
        ] {
            assert_eq!(set.contains(name), hidden, "{name}");
        }
        let all = NameSet::new(["*"]).unwrap();
        assert!(all.contains("anything"));
        assert!(all.contains("ns/tool"));
        assert!(all.contains(""));
        assert!(!NameSet::default().contains("x"));
    }

    #[test]
    fn detects_glob_syntax() {
        assert!(is_glob("a*"));
        assert!(is_glob("a?"));
        assert!(is_glob("[ab]"));
        assert!(is_glob("{a,b}"));
        assert!(!is_glob("create_charge"));
        assert!(!is_glob("a/b"));
    }

    #[test]
    fn wildcards() {
        for (pattern, name, want) in [
            ("*", "", true),
            ("*", "anything/at all", true),
            ("a*", "a", true),
            ("a*b", "ab", true),
            ("a*b", "axxbxb", true),
            ("a*b", "axxbx", false),
            ("*_admin", "user_admin", true),
            ("*_admin", "user_admins", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "a\u{e9}c", false),
            ("a??c", "a\u{e9}c", true),
            ("**", "x", true),
            ("*a*a*a*", "aaa", true),
            ("*a*a*a*", "aa", false),
        ] {
            assert_eq!(
                wildcard_match(pattern.as_bytes(), name.as_bytes()),
                want,
                "{pattern} {name}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn wildcard_agrees_with_globset(pattern in "[ab_*?\u{e9}]{1,8}", name in "[ab_/\u{e9}]{0,10}") {
            if let Ok(full) = GlobBuilder::new(&pattern).literal_separator(false).build() {
                let fast = NameGlob::new(&pattern).unwrap();
                proptest::prop_assert!(matches!(fast, NameGlob::Wildcard(_)));
                proptest::prop_assert_eq!(fast.is_match(&name), full.compile_matcher().is_match(&name));
            }
        }
    }

    #[test]
    fn path_normalization() {
        for (input, want) in [
            ("/srv/data/a.csv", "/srv/data/a.csv"),
            ("/srv/data/../../etc/passwd", "/etc/passwd"),
            ("/srv/data/./a/./b", "/srv/data/a/b"),
            ("/srv//data///a", "/srv/data/a"),
            ("/srv/data/sub/", "/srv/data/sub/"),
            ("/srv/data/sub/../", "/srv/data/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("../x", "../x"),
            ("a/../../x", "../x"),
            ("./a", "a"),
            ("a..b/c", "a..b/c"),
            ("user@example.com", "user@example.com"),
            ("", ""),
            ("/", "/"),
            ("//srv", "/srv"),
        ] {
            assert_eq!(normalize_path(input), want, "{input}");
        }
        assert!(matches!(normalize_path("/srv/data/x"), Cow::Borrowed(_)));
    }

    #[test]
    fn bad_glob() {
        assert!(NameGlob::new("a[")
            .unwrap_err()
            .contains("invalid glob \"a[\""));
        assert!(value_glob("{a").is_err());
    }
}
