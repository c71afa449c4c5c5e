//! The operator console: a web page served by the admin listener at `/`,
//! its scripts and stylesheet embedded in the binary (no CDN, no build
//! step). The script is a set of ES modules the browser loads itself:
//! `console.js`, the entry the page names, imports the others by relative
//! path (`./client.js`), all served under `/console/` from the table `ASSETS`.
//!
//! The assets hold no secrets and are served without the admin token; the
//! page asks for the token, keeps it in the tab's `sessionStorage` (never in
//! a URL or a cookie, so no other site can make the browser send it), and
//! makes every call through the token-protected admin API (`/admin/...`,
//! `/metrics`). The page and its assets carry a content security policy
//! that allows only these same-origin assets: no inline script, no framing, so a
//! component name or a dead letter's payload, shown as text, cannot run as
//! code even if a rendering bug let it into the markup.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

const INDEX: &str = include_str!("index.html");
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
/// Browsers run a module only if it is served with a JavaScript type.
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// `/console/FILE`, served from this folder's `FILE`: the path and the
/// file cannot disagree.
macro_rules! module {
    ($file:literal) => {
        (concat!("/console/", $file), include_str!($file), JAVASCRIPT)
    };
}

/// Every asset the console has: (path, contents, content type). A new
/// module is one line here.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", INDEX, HTML),
    ("/index.html", INDEX, HTML),
    ("/console/console.css", include_str!("console.css"), CSS),
    module!("console.js"),
    module!("chart.js"),
    module!("client.js"),
    module!("components.js"),
    module!("deploy.js"),
    module!("detail.js"),
    module!("dom.js"),
    module!("events.js"),
    module!("format.js"),
    module!("health.js"),
    module!("metrics.js"),
    module!("pages.js"),
    module!("poll.js"),
    module!("render.js"),
    module!("state.js"),
    module!("traffic.js"),
    module!("undeployed.js"),
];

/// What the console allows the page to load and do.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; form-action 'none'; \
                      frame-ancestors 'none'; base-uri 'none'";

/// The console's asset at `path`, if `path` names one.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let &(_, body, content_type) = ASSETS.iter().find(|(served, ..)| *served == path)?;
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new binary may bring a new page: never serve a stale one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The served modules: (path, source).
    fn modules() -> impl Iterator<Item = (&'static str, &'static str)> {
        ASSETS.iter().filter(|asset| asset.2 == JAVASCRIPT).map(|&(path, source, _)| (path, source))
    }

    /// What `source` imports: the string after `from` (`import {a} from
    /// './a.js'`, `export {a} from './a.js'`), `import` (`import './a.js'`)
    /// or `import(` (`import('./a.js')`). Comments and strings are not told
    /// apart from code: a false find fails a test below, it never hides one.
    fn imports(source: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for (at, quote) in source.match_indices(['\'', '"', '`']) {
            let before = source[..at].trim_end();
            let after_keyword = ["from", "import", "import("].into_iter().any(|keyword| {
                before.strip_suffix(keyword).is_some_and(|rest| {
                    !rest.ends_with(|c: char| c.is_alphanumeric() || "_$.".contains(c))
                })
            });
            if let Some(end) = source[at + 1..].find(quote).filter(|_| after_keyword) {
                found.push(&source[at + 1..at + 1 + end]);
            }
        }
        found
    }

    /// Each served module's path, and the paths it imports, each checked
    /// to be a module of this folder.
    fn import_graph() -> BTreeMap<&'static str, Vec<String>> {
        let mut graph = BTreeMap::new();
        for (path, source) in modules() {
            let targets = imports(source).into_iter().map(|specifier| {
                // A bare name needs an import map or a bundler; a full URL
                // is elsewhere, which the policy refuses.
                let file = specifier.strip_prefix("./").filter(|file| file.ends_with(".js"));
                let file = file.unwrap_or_else(|| {
                    panic!("{path} imports {specifier:?}: only ./NAME.js, from this folder")
                });
                format!("/console/{file}")
            });
            graph.insert(path, targets.collect());
        }
        graph
    }

    #[test]
    fn the_page_loads_only_what_the_policy_allows() {
        for (path, ..) in ASSETS {
            let response = asset(path).unwrap();
            assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], POLICY, "{path}");
        }
        assert!(asset("/console/other.js").is_none());
        // Same-origin assets only, and no inline script for the policy to refuse.
        assert!(INDEX.contains(r#"<script type="module" src="/console/console.js">"#));
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"), "nothing remote");
        for (path, source) in modules() {
            for markup in
                ["innerHTML", "outerHTML", "insertAdjacentHTML", "DOMParser", "document.write"]
            {
                assert!(
                    !source.contains(markup),
                    "{path}: data is shown as text, not parsed: {markup}"
                );
            }
        }
    }

    /// A module imported but not served stops the whole console (the
    /// browser runs a module graph entirely or not at all); one served that
    /// nothing imports is dead code.
    #[test]
    fn every_module_imported_is_served_and_every_one_served_is_imported() {
        let graph = import_graph();
        let mut imported = vec!["/console/console.js".to_string()]; // the page's own
        for (path, targets) in &graph {
            for target in targets {
                assert!(graph.contains_key(target.as_str()), "{path} imports {target}: not served");
            }
            imported.extend(targets.iter().cloned());
        }
        for path in graph.keys() {
            assert!(imported.iter().any(|i| i == path), "{path} is served but nothing imports it");
        }
    }

    /// Modules in a cycle run in an order that depends on which is imported
    /// first, and one may read another's binding before it is set; the
    /// redraw is handed its sections (render.js) so that none is needed.
    #[test]
    fn the_modules_import_no_cycle() {
        fn visit<'a>(
            path: &'a str,
            graph: &'a BTreeMap<&'static str, Vec<String>>,
            trail: &mut Vec<&'a str>,
            done: &mut Vec<&'a str>,
        ) {
            if done.contains(&path) {
                return;
            }
            assert!(!trail.contains(&path), "an import cycle: {} -> {path}", trail.join(" -> "));
            trail.push(path);
            for target in graph.get(path).into_iter().flatten() {
                visit(target, graph, trail, done);
            }
            trail.pop();
            done.push(path);
        }
        let graph = import_graph();
        let mut done = Vec::new();
        for path in graph.keys() {
            visit(path, &graph, &mut Vec::new(), &mut done);
        }
    }

    #[test]
    fn imports_are_found_in_every_form() {
        let source = "import { a } from './a.js';\nimport * as b from \"./b.js\";\n\
                      import './c.js';\nexport { d } from './d.js';\nconst e = import('./e.js');\n\
                      const f = 'not from here'; say(\"important\"); Array.from('g');";
        assert_eq!(imports(source), ["./a.js", "./b.js", "./c.js", "./d.js", "./e.js"]);
    }
}
