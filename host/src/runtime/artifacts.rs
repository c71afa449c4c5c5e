//! Compiled components cached on disk, so restarts and rollbacks never
//! recompile.
//!
//! An entry is `<dir>/<digest>-<engine>-<init>.cwasm`, where `digest` is the
//! sha256 of the component bytes, `engine` fingerprints the engine
//! configuration and wasmtime version (an artifact from another
//! configuration would be refused by wasmtime anyway, but should not even
//! be looked at), and `init` names which of the host's engines it was
//! compiled for ([`MemoryInit`]), chosen from the bytes when it was compiled. Beside it,
//! `.sha256` holds the checksum of the artifact itself: deserialising runs
//! machine code from the file, so an entry is trusted only when the checksum
//! matches; anything else is rebuilt.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::runtime::engine::{Engines, MemoryInit};

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (no usable cache entry); nothing is written until the
    /// caller [`ArtifactCache::keep`]s it.
    Compiled,
    /// Deserialised from a verified cache entry.
    Cached,
}

/// The artifact cache of the host's engines; without a directory (the test
/// runner, the harness, benchmarks), every load compiles and nothing is
/// kept.
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    engines: Engines,
    /// Per engine, in [`MemoryInit::ALL`] order: its fingerprint.
    fingerprints: [String; 2],
}

impl ArtifactCache {
    /// A cache in `dir` (created if missing) for `engines`; `None`, no cache.
    pub fn new(dir: Option<PathBuf>, engines: Engines) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        let fingerprints = MemoryInit::ALL.map(|init| fingerprint(engines.get(init)));
        Ok(ArtifactCache { dir, engines, fingerprints })
    }

    /// `<dir>/<digest>-<engine>-<init>.cwasm`, with a cache.
    fn entry(&self, digest: &str, init: MemoryInit) -> Option<PathBuf> {
        let fingerprint = &self.fingerprints[init as usize];
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{digest}-{fingerprint}-{}.cwasm", init.name())))
    }

    /// The component whose bytes have sha256 `digest`: from the cache when a
    /// verified entry exists, else compiled from `bytes()`. A compiled
    /// component is not cached here: a deploy keeps it only once every check
    /// has passed, so a refused component leaves no artifact behind.
    pub async fn load(
        &self,
        digest: &str,
        bytes: impl FnOnce() -> std::io::Result<Vec<u8>> + Send + 'static,
    ) -> Result<(Component, Origin), CompileError> {
        let entries = MemoryInit::ALL.map(|init| (init, self.entry(digest, init)));
        let entries: Vec<(MemoryInit, PathBuf)> =
            entries.into_iter().filter_map(|(init, path)| Some((init, path?))).collect();
        let engines = self.engines.clone();
        let digest = digest.to_string();
        // File I/O, hashing and compiling are all blocking work.
        tokio::task::spawn_blocking(move || {
            for (init, path) in entries {
                match read_verified(engines.get(init), &path) {
                    Ok(Some(component)) => return Ok((component, Origin::Cached)),
                    Ok(None) => {}
                    Err(reason) => {
                        tracing::warn!(%reason, "corrupt cache entry; recompiling");
                    }
                }
            }
            let bytes = bytes().map_err(|e| CompileError::Io(e.to_string()))?;
            let init = MemoryInit::for_component(&bytes);
            let component = Component::new(engines.get(init), &bytes)
                .map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
            tracing::info!(digest, memory = init.name(), "compiled component");
            Ok((component, Origin::Compiled))
        })
        .await
        .map_err(|e| CompileError::Io(format!("compiler task failed: {e}")))?
    }

    /// Cache `component`, compiled from the bytes with sha256 `digest`, so
    /// that restarts and rollbacks load it instead of compiling. A failure
    /// is logged: the component works, only a later load compiles again.
    ///
    /// Written even when an entry exists: a component is compiled only when
    /// the entry was missing or failed its checksum, and a bad entry must be
    /// replaced, not kept.
    pub async fn keep(&self, digest: &str, component: &Component) {
        let Some(path) = self.entry(digest, self.engines.init_of(component.engine())) else {
            return;
        };
        let component = component.clone();
        let written = tokio::task::spawn_blocking(move || write_entry(&component, &path)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not cache the compiled component"
                )
            }
            Err(error) => tracing::warn!(%error, "could not cache the compiled component"),
        }
    }
}

/// What identifies `engine`'s configuration and wasmtime version.
fn fingerprint(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The bytes are not a valid component.
    #[error("{0}")]
    Invalid(String),
    /// The stored bytes could not be read.
    #[error("reading the component: {0}")]
    Io(String),
}

/// Why a cache entry was not used, or not written.
#[derive(Debug, thiserror::Error)]
enum CacheError {
    /// Reading or writing the entry failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The artifact does not match the checksum written beside it.
    #[error("{0}: checksum mismatch")]
    Checksum(PathBuf),
    /// wasmtime refused to serialise or load the artifact.
    #[error("{path}: {source:#}")]
    Artifact {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_path_buf(), source }
}

/// `Ok(None)`: no entry. `Err`: an entry that must not be trusted.
fn read_verified(engine: &Engine, path: &Path) -> Result<Option<Component>, CacheError> {
    let artifact = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    let sums = checksum_path(path);
    let expected = std::fs::read_to_string(&sums).map_err(io_at(&sums))?;
    if hex_sha256(&artifact) != expected.trim() {
        return Err(CacheError::Checksum(path.to_path_buf()));
    }
    // SAFETY: `Component::deserialize` runs the artifact's machine code, so it
    // must be the output of `Component::serialize` of a compatible engine. It
    // is: the checksum written beside it by `write_entry` matches, so these
    // are the bytes this host serialised, and wasmtime itself rejects an
    // artifact from another version or configuration.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &artifact) };
    let component =
        component.map_err(|source| CacheError::Artifact { path: path.to_path_buf(), source })?;
    tracing::info!(path = %path.display(), "loaded compiled component from cache");
    Ok(Some(component))
}

fn write_entry(component: &Component, path: &Path) -> Result<(), CacheError> {
    let artifact = component
        .serialize()
        .map_err(|source| CacheError::Artifact { path: path.to_path_buf(), source })?;
    // Written aside and renamed into place, checksum last: a crash leaves
    // either no entry or one whose checksum does not match, never a torn one
    // that is trusted.
    write_atomically(path, &artifact).map_err(io_at(path))?;
    let sums = checksum_path(path);
    write_atomically(&sums, hex_sha256(&artifact).as_bytes()).map_err(io_at(&sums))?;
    Ok(())
}

fn checksum_path(path: &Path) -> PathBuf {
    path.with_extension("sha256")
}

/// Write `bytes` to a temporary file beside `path`, sync, and rename it over `path`.
///
/// The temporary name is unique to this call: deploys of the same bytes
/// under several names write the same paths at once, and a name shared by
/// the writers of one process let one rename another's half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{unique}", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// sha256 of `bytes`, lower-case hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
