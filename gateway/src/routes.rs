//! Path-prefix routing: which component answers which path.

/// One entry of the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// A path prefix such as `/users`; matches `/users` and `/users/...`,
    /// never `/usersx`.
    pub prefix: String,
    /// The component that answers it.
    pub component: String,
}

/// A route that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The prefix is not of the form `/segment[/segment...]`.
    #[error(
        "route prefix {0:?} must start with '/', must not end with '/', and must have no empty segments"
    )]
    InvalidPrefix(String),
    /// The prefix has `.` or `..` segments or percent-encoding: the gateway
    /// matches paths with escaped unreserved characters decoded and dot
    /// segments refused ([`crate::paths`]), so it would never match what it
    /// seems to say.
    #[error(
        "route prefix {0:?} is not normalised: no '.' or '..' segments, no percent-encoding, no backslash"
    )]
    NotNormalised(String),
    /// Two routes claim the same prefix.
    #[error("route prefix {0:?} is claimed twice")]
    Duplicate(String),
    /// The reserved paths belong to the gateway.
    #[error("route prefix {0:?} is reserved by the gateway")]
    Reserved(String),
}

/// The gateway's routes, longest prefix first so the most specific wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// Paths the gateway answers itself.
const RESERVED: &[&str] = &["/health", "/ready"];

impl RouteTable {
    /// A table from `(prefix, component)` pairs, validated.
    pub fn new<P: Into<String>, C: Into<String>>(
        routes: impl IntoIterator<Item = (P, C)>,
    ) -> Result<Self, RouteError> {
        let mut table: Vec<Route> = Vec::new();
        for (prefix, component) in routes {
            let prefix = prefix.into();
            validate_prefix(&prefix)?;
            if table.iter().any(|r| r.prefix == prefix) {
                return Err(RouteError::Duplicate(prefix));
            }
            table.push(Route { prefix, component: component.into() });
        }
        table.sort_by(|a, b| b.prefix.len().cmp(&a.prefix.len()).then(a.prefix.cmp(&b.prefix)));
        Ok(RouteTable { routes: table })
    }

    /// The component that answers `path`, if any.
    pub fn resolve(&self, path: &str) -> Option<&str> {
        self.route_for(path).map(|r| r.component.as_str())
    }

    /// The route that answers `path`, if any.
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| prefix_matches(&r.prefix, path))
    }

    /// The routes other than `exact` (the one that answers `path`) that a
    /// lenient server could read `path` as lying in, and that are at least
    /// as specific: same or more segments ([`crate::paths`]). `/legacy/Admin/x`
    /// answered by `/legacy` has the rival `/legacy/admin`.
    pub fn rivals<'a>(&'a self, path: &str, exact: &'a Route) -> impl Iterator<Item = &'a Route> {
        let loose = crate::paths::loose_segments(path);
        let depth = exact.prefix.matches('/').count();
        self.routes.iter().filter(move |route| {
            route.prefix != exact.prefix
                && route.prefix.matches('/').count() >= depth
                && crate::paths::loosely_matches(&route.prefix, &loose)
        })
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The distinct components the table routes to, sorted.
    pub fn components(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.iter().map(|r| r.component.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

fn validate_prefix(prefix: &str) -> Result<(), RouteError> {
    let well_formed = prefix.starts_with('/')
        && prefix.len() > 1
        && !prefix.ends_with('/')
        && prefix[1..].split('/').all(|s| !s.is_empty() && !s.contains(['?', '#']));
    if !well_formed {
        return Err(RouteError::InvalidPrefix(prefix.to_string()));
    }
    let normalised =
        prefix[1..].split('/').all(|s| s != "." && s != "..") && !prefix.contains(['%', '\\']);
    if !normalised {
        return Err(RouteError::NotNormalised(prefix.to_string()));
    }
    if RESERVED.iter().any(|r| prefix_matches(r, prefix) || prefix_matches(prefix, r)) {
        return Err(RouteError::Reserved(prefix.to_string()));
    }
    Ok(())
}

/// `/users` matches `/users`, `/users/` and `/users/u1`, not `/usersx`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_on_segment_boundaries_only() {
        let table = RouteTable::new([("/users", "user"), ("/users/admin", "admin")]).unwrap();
        assert_eq!(table.resolve("/users"), Some("user"));
        assert_eq!(table.resolve("/users/u1"), Some("user"));
        assert_eq!(table.resolve("/users/admin/x"), Some("admin"));
        assert_eq!(table.resolve("/usersx"), None);
        assert_eq!(table.resolve("/"), None);
    }

    #[test]
    fn rivals_are_routes_as_specific_or_more_that_a_lenient_server_could_mean() {
        let table =
            RouteTable::new([("/legacy", "old"), ("/legacy/admin", "old"), ("/legacy/a/b", "x")])
                .unwrap();
        let rivals = |path: &str| -> Vec<&str> {
            let exact = table.route_for(path).unwrap();
            table.rivals(path, exact).map(|r| r.prefix.as_str()).collect()
        };
        assert_eq!(rivals("/legacy/Admin/x"), ["/legacy/admin"]);
        assert_eq!(rivals("/legacy/admin.json"), ["/legacy/admin"]);
        assert_eq!(rivals("/legacy/admin;x/y"), ["/legacy/admin"]);
        assert_eq!(rivals("/legacy/A/b.html"), ["/legacy/a/b"]);
        assert!(rivals("/legacy/admin/x").is_empty(), "the shorter /legacy is no rival");
        assert!(rivals("/legacy/administrator").is_empty());
        assert!(rivals("/legacy/other").is_empty());
    }

    #[test]
    fn rejects_bad_prefixes() {
        for bad in ["users", "/", "/users/", "//x", "/a//b", "/a?b"] {
            assert_eq!(
                RouteTable::new([(bad, "c")]).unwrap_err(),
                RouteError::InvalidPrefix(bad.into())
            );
        }
        for odd in ["/a/../b", "/a/.", "/%2e%2e/users", "/a%2Fb", "/a\\b"] {
            assert_eq!(
                RouteTable::new([(odd, "c")]).unwrap_err(),
                RouteError::NotNormalised(odd.into())
            );
        }
        assert_eq!(
            RouteTable::new([("/a", "x"), ("/a", "y")]).unwrap_err(),
            RouteError::Duplicate("/a".into())
        );
        assert_eq!(
            RouteTable::new([("/health", "x")]).unwrap_err(),
            RouteError::Reserved("/health".into())
        );
    }
}
