//! Globs, in their two roles: tool names (`hide`, glob keys under `tools`) and the `glob`
//! predicate operator on argument values (paths such as `/srv/data/**`).

use std::collections::HashSet;

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

/// True when `s` uses glob syntax; anything else is matched as an exact name, which is both
/// faster and immune to surprises from characters a tool name is unlikely to contain.
pub(crate) fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Compiles a glob over tool names. `*` crosses `/` here so that `"*"` really hides every tool,
/// including namespaced names like `github/create_issue`.
pub(crate) fn tool_name_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob \"{pattern}\": {}", e.kind()))
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

/// A set of tool names and tool-name globs (the `hide` list).
#[derive(Debug, Default)]
pub(crate) struct NameSet {
    exact: HashSet<String>,
    globs: Option<GlobSet>,
}

impl NameSet {
    /// Builds the set; entries are assumed valid (checked with [`tool_name_glob`] first).
    pub(crate) fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<NameSet, String> {
        let mut exact = HashSet::new();
        let mut builder = GlobSetBuilder::new();
        let mut any_glob = false;
        for entry in entries {
            if is_glob(entry) {
                let glob = GlobBuilder::new(entry)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("invalid glob \"{entry}\": {}", e.kind()))?;
                builder.add(glob);
                any_glob = true;
            } else {
                exact.insert(entry.to_owned());
            }
        }
        let globs = if any_glob {
            Some(builder.build().map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(NameSet { exact, globs })
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.exact.contains(name) || self.globs.as_ref().is_some_and(|g| g.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_globs_cross_slashes_value_globs_do_not() {
        let t = tool_name_glob("delete_*").unwrap();
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
    fn bad_glob() {
        assert!(tool_name_glob("a[").unwrap_err().contains("invalid glob \"a[\""));
        assert!(value_glob("{a").is_err());
    }
}
