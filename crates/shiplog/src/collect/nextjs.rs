//! Next.js build output (`.next/`), read by `shiplog build` after `next build`, with
//! Turbopack or with webpack.
//!
//! - chunks and assets: every file under `.next/static/` (what browsers download), named
//!   relative to `.next/` (`static/chunks/…`);
//! - routes with their first-load JavaScript (the chunks a first visit downloads, their
//!   bytes and gzip bytes): from `diagnostics/route-bundle-stats.json` (Turbopack), else from
//!   the prerendered HTML's script tags (`server/app/*.html`, app router), else from the
//!   root main files and the route's `static/chunks/app/…/{layout,page}-*.js` (dynamic app
//!   routes), and from `build-manifest.json` `pages` for the pages router;
//! - the bundler: Turbopack when `.next/turbopack` exists or the build manifest's chunk
//!   loading global is `TURBOPACK`, else webpack.

use super::outputs::Outputs;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What `.next/` says about the build that just ran.
#[derive(Debug)]
pub struct NextBuild {
    pub bundler: &'static str,
    pub version: Option<String>,
    pub outputs: Outputs,
    /// `[{route, first_load_bytes, first_load_gzip_bytes, chunks}]`
    pub routes: Vec<Value>,
}

/// Reads `dist` (a `.next` folder) when a build wrote it at or after `since`.
pub fn read(project: &Path, dist: &Path, since: SystemTime) -> Option<std::io::Result<NextBuild>> {
    let build_id = dist.join("BUILD_ID");
    let written = std::fs::metadata(&build_id)
        .and_then(|m| m.modified())
        .ok()?;
    // A second of slack: some filesystems keep mtimes in whole seconds.
    if written + std::time::Duration::from_secs(1) < since {
        return None;
    }
    Some(read_now(project, dist))
}

fn json_file(p: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn read_now(project: &Path, dist: &Path) -> std::io::Result<NextBuild> {
    let manifest = json_file(&dist.join("build-manifest.json")).unwrap_or(Value::Null);
    let turbopack = dist.join("turbopack").exists()
        || manifest["chunkLoadingGlobal"].as_str() == Some("TURBOPACK");
    let mut outputs = Outputs::default();
    let static_dir = dist.join("static");
    if static_dir.is_dir() {
        outputs.add_path(&static_dir, "static/")?;
    }
    let mut routes = Vec::new();
    for (route, chunks) in route_chunks(dist, &manifest, &outputs) {
        let mut bytes = 0;
        let mut gzip = 0;
        let mut names = Vec::new();
        for c in &chunks {
            if let Some(f) = outputs.get(c) {
                bytes += f.bytes;
                gzip += f.gzip_bytes;
                names.push(c.clone());
            }
        }
        routes.push(json!({
            "route": route,
            "first_load_bytes": bytes,
            "first_load_gzip_bytes": gzip,
            "chunks": names,
        }));
    }
    Ok(NextBuild {
        bundler: if turbopack { "turbopack" } else { "webpack" },
        version: package_version(project, "next"),
        outputs,
        routes,
    })
}

/// Each route with the chunks (names relative to `.next/`) of its first load.
fn route_chunks(dist: &Path, manifest: &Value, outputs: &Outputs) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    // Turbopack writes the answer itself.
    if let Some(Value::Array(stats)) = json_file(&dist.join("diagnostics/route-bundle-stats.json"))
    {
        for s in stats {
            let Some(route) = s["route"].as_str() else {
                continue;
            };
            let chunks = s["firstLoadChunkPaths"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|p| {
                            p.trim_start_matches("./")
                                .trim_start_matches(".next/")
                                .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((route.to_string(), chunks));
        }
        return out;
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let root_main = strings(&manifest["rootMainFiles"]);
    // App router: "/page" → "/", "/blog/[slug]/page" → "/blog/[slug]".
    if let Some(Value::Object(app)) = json_file(&dist.join("app-path-routes-manifest.json")) {
        let mut app: Vec<(&String, &Value)> = app.iter().collect();
        app.sort_by(|a, b| a.1.as_str().cmp(&b.1.as_str()));
        for (entry, route) in app {
            let Some(route) = route.as_str() else {
                continue;
            };
            if entry.ends_with("/route") {
                continue; // route handlers send no JavaScript to browsers
            }
            let stem = entry.trim_end_matches("/page");
            let html = dist.join("server/app").join(
                format!("{}.html", if stem.is_empty() { "/index" } else { stem })
                    .trim_start_matches('/'),
            );
            let chunks = match std::fs::read_to_string(&html) {
                Ok(text) => script_chunks(&text),
                Err(_) => {
                    let mut c: BTreeSet<String> = root_main.iter().cloned().collect();
                    c.extend(app_segment_chunks(stem, outputs));
                    c.into_iter().collect()
                }
            };
            out.push((route.to_string(), chunks));
        }
    }
    // Pages router.
    if let Value::Object(pages) = &manifest["pages"] {
        let app_files = strings(&pages.get("/_app").cloned().unwrap_or(Value::Null));
        for (route, files) in pages {
            if matches!(route.as_str(), "/_app" | "/_error" | "/_document") {
                continue;
            }
            let mut c: BTreeSet<String> = app_files.iter().cloned().collect();
            c.extend(strings(files));
            out.push((route.clone(), c.into_iter().collect()));
        }
    }
    out
}

/// The `/_next/static/….js` script sources of a prerendered page, in order, once each;
/// `noModule` scripts (polyfills modern browsers skip) left out.
fn script_chunks(html: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = html[pos..].find("/_next/static/").map(|i| i + pos) {
        let start = i + "/_next/".len();
        let after = &html[start..];
        let end = after
            .find(|c: char| c == '"' || c == '\'' || c == '?' || c == '\\' || c.is_whitespace())
            .unwrap_or(after.len());
        let path = &after[..end];
        let tag_start = html[..i].rfind('<').unwrap_or(0);
        let tag_end = html[i..].find('>').map_or(html.len(), |e| e + i);
        let nomodule = html[tag_start..tag_end]
            .to_ascii_lowercase()
            .contains("nomodule");
        if path.ends_with(".js") && !nomodule && seen.insert(path.to_string()) {
            out.push(path.to_string());
        }
        pos = start + end;
    }
    out
}

/// `static/chunks/app/{seg…}/{layout,page}-<hash>.js` along an app route's folders.
fn app_segment_chunks(stem: &str, outputs: &Outputs) -> Vec<String> {
    let mut prefixes = vec!["static/chunks/app/".to_string()];
    let mut path = String::from("static/chunks/app/");
    for seg in stem.split('/').filter(|s| !s.is_empty()) {
        path.push_str(seg);
        path.push('/');
        prefixes.push(path.clone());
    }
    let leaf = prefixes.last().cloned().unwrap_or_default();
    outputs
        .chunks
        .iter()
        .filter(|f| {
            prefixes.iter().any(|p| {
                f.name
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with("layout-") && !rest.contains('/'))
            }) || f
                .name
                .strip_prefix(leaf.as_str())
                .is_some_and(|rest| rest.starts_with("page-") && !rest.contains('/'))
        })
        .map(|f| f.name.clone())
        .collect()
}

/// The version of an installed package, looked up from `dir` upwards.
pub fn package_version(dir: &Path, name: &str) -> Option<String> {
    let mut d: Option<PathBuf> = Some(dir.to_path_buf());
    while let Some(cur) = d {
        if let Some(v) = json_file(&cur.join("node_modules").join(name).join("package.json")) {
            return v["version"].as_str().map(String::from);
        }
        d = cur.parent().map(Path::to_path_buf);
    }
    None
}

impl NextBuild {
    /// The event's data fields from this build.
    pub fn insert_into(&self, data: &mut Map<String, Value>) {
        data.insert("bundler".into(), self.bundler.into());
        self.outputs.insert_into(data);
        data.insert("routes".into(), Value::Array(self.routes.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_of_a_prerendered_page() {
        let html = r#"<script src="/_next/static/chunks/webpack-1.js" async=""></script><link rel="preload" href="/_next/static/css/a.css"/><script src="/_next/static/chunks/main-app-2.js"></script><script src="/_next/static/chunks/polyfills-9.js" noModule=""></script><script>self.__next_f.push([1,"/_next/static/chunks/app/page-3.js"])</script><script src="/_next/static/chunks/webpack-1.js"></script>"#;
        assert_eq!(
            script_chunks(html),
            [
                "static/chunks/webpack-1.js",
                "static/chunks/main-app-2.js",
                "static/chunks/app/page-3.js"
            ]
        );
    }

    #[test]
    fn chunks_along_an_app_route() {
        let mut o = Outputs::default();
        for n in [
            "static/chunks/app/layout-1.js",
            "static/chunks/app/page-2.js",
            "static/chunks/app/blog/layout-3.js",
            "static/chunks/app/blog/[slug]/page-4.js",
            "static/chunks/app/other/page-5.js",
        ] {
            o.chunks.push(super::super::outputs::FileSize {
                name: n.into(),
                bytes: 1,
                gzip_bytes: 1,
            });
        }
        assert_eq!(
            app_segment_chunks("/blog/[slug]", &o),
            [
                "static/chunks/app/layout-1.js",
                "static/chunks/app/blog/layout-3.js",
                "static/chunks/app/blog/[slug]/page-4.js"
            ]
        );
        assert_eq!(
            app_segment_chunks("", &o),
            [
                "static/chunks/app/layout-1.js",
                "static/chunks/app/page-2.js"
            ]
        );
    }
}
