//! Sizes of files a build wrote: bytes and gzip bytes (the gzip level the JavaScript
//! plugins use, 6), script files as `chunks`, the others as `assets`, source maps totalled
//! apart. For `shiplog build --out DIR` and the Next.js reader.

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Files larger than this are not gzipped (their raw size is used).
const GZIP_MAX_BYTES: u64 = 32 << 20;
/// Formats that are already compressed: their gzip size is their size.
const COMPRESSED: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "webp", "avif", "ico", "woff", "woff2", "mp3", "mp4", "webm",
    "ogg", "zip", "gz", "br", "zst",
];

/// One measured file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSize {
    /// The path relative to the folder measured, with `/`.
    pub name: String,
    pub bytes: u64,
    pub gzip_bytes: u64,
}

/// The measured output of a build.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    pub chunks: Vec<FileSize>,
    pub assets: Vec<FileSize>,
    pub sourcemap_bytes: u64,
}

/// Counts what is written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The gzip size of `bytes` (level 6).
pub fn gzip_len(bytes: &[u8]) -> u64 {
    let mut enc = GzEncoder::new(Counter(0), Compression::new(6));
    // Writing to a counter cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().map(|c| c.0).unwrap_or(bytes.len() as u64)
}

fn is_chunk(name: &str) -> bool {
    name.ends_with(".js") || name.ends_with(".mjs") || name.ends_with(".cjs")
}

/// Measures one file (`name` as it will be reported).
pub fn measure_file(path: &Path, name: String) -> std::io::Result<FileSize> {
    let bytes = std::fs::read(path)?;
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    let gzip_bytes = if bytes.is_empty() {
        0
    } else if COMPRESSED.contains(&ext.as_str()) || bytes.len() as u64 > GZIP_MAX_BYTES {
        bytes.len() as u64
    } else {
        gzip_len(&bytes)
    };
    Ok(FileSize {
        name,
        bytes: bytes.len() as u64,
        gzip_bytes,
    })
}

/// Every file under `dir` (recursively), names relative to `dir`, sorted.
pub fn files_under(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((p, rel));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

impl Outputs {
    /// Adds files (path, reported name): scripts to chunks, maps apart, the rest to assets.
    pub fn add_files(&mut self, files: &[(PathBuf, String)]) -> std::io::Result<()> {
        for (path, name) in files {
            let f = measure_file(path, name.clone())?;
            if name.ends_with(".map") {
                self.sourcemap_bytes += f.bytes;
            } else if is_chunk(name) {
                self.chunks.push(f);
            } else {
                self.assets.push(f);
            }
        }
        self.chunks.sort_by(|a, b| a.name.cmp(&b.name));
        self.assets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Measures a folder, or one file (an artifact such as a binary or an image tarball).
    pub fn add_path(&mut self, path: &Path, prefix: &str) -> std::io::Result<()> {
        if path.is_dir() {
            let files: Vec<(PathBuf, String)> = files_under(path)?
                .into_iter()
                .map(|(p, n)| (p, format!("{prefix}{n}")))
                .collect();
            self.add_files(&files)
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.add_files(&[(path.to_path_buf(), format!("{prefix}{name}"))])
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.assets.is_empty()
    }

    /// The size of a file reported as a chunk or asset.
    pub fn get(&self, name: &str) -> Option<&FileSize> {
        self.chunks
            .iter()
            .chain(self.assets.iter())
            .find(|f| f.name == name)
    }

    /// `bundle_bytes`, `gzip_bytes`, `chunks`, `assets` (and `sourcemap_bytes`) of the event.
    pub fn insert_into(&self, data: &mut serde_json::Map<String, Value>) {
        let item =
            |f: &FileSize| json!({"name": f.name, "bytes": f.bytes, "gzip_bytes": f.gzip_bytes});
        let all = self.chunks.iter().chain(self.assets.iter());
        data.insert(
            "bundle_bytes".into(),
            all.clone().map(|f| f.bytes).sum::<u64>().into(),
        );
        data.insert(
            "gzip_bytes".into(),
            all.map(|f| f.gzip_bytes).sum::<u64>().into(),
        );
        data.insert(
            "chunks".into(),
            self.chunks.iter().map(item).collect::<Vec<_>>().into(),
        );
        data.insert(
            "assets".into(),
            self.assets.iter().map(item).collect::<Vec<_>>().into(),
        );
        if self.sourcemap_bytes > 0 {
            data.insert("sourcemap_bytes".into(), self.sourcemap_bytes.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        let js = "console.log('hello hello hello hello');\n".repeat(50);
        std::fs::write(dir.path().join("assets/main.js"), &js).unwrap();
        std::fs::write(dir.path().join("assets/main.js.map"), "{}").unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.path().join("logo.png"), [1u8, 2, 3]).unwrap();
        let mut o = Outputs::default();
        o.add_path(dir.path(), "").unwrap();
        assert_eq!(o.chunks.len(), 1);
        assert_eq!(o.chunks[0].name, "assets/main.js");
        assert_eq!(o.chunks[0].bytes, js.len() as u64);
        assert!(
            o.chunks[0].gzip_bytes < o.chunks[0].bytes / 10,
            "repetitive text compresses"
        );
        assert_eq!(o.sourcemap_bytes, 2);
        let names: Vec<&str> = o.assets.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["index.html", "logo.png"]);
        assert_eq!(
            o.get("logo.png").unwrap().gzip_bytes,
            3,
            "compressed formats count as is"
        );
    }
}
