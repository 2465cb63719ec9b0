//! The on-disk compile cache: serialized executables keyed by everything that can make one
//! unusable (plugin file, API version, program text, compile options, host CPU). A stale or
//! corrupt entry is recompiled and rewritten, never fatal.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::client::Client;
use super::compile_options::CompileOptions;
use super::error::Result;
use super::executable::LoadedExecutable;

/// Version 2 entries carry their own key, so that an entry copied or renamed to another
/// program's name is recompiled instead of run with the wrong arguments.
const MAGIC: &[u8; 12] = b"TIXLA-EXE-2\n";

/// How an executable was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Disabled,
    Hit,
    Miss,
    /// An entry existed but was corrupt or would not load; it was recompiled and replaced.
    Replaced,
}

pub struct CompileCache {
    dir: PathBuf,
    plugin_hash: OnceLock<String>,
}

impl CompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache {
            dir: dir.into(),
            plugin_hash: OnceLock::new(),
        }
    }

    /// `$XDG_CACHE_HOME/ti-xla/compile`, else `~/.cache/ti-xla/compile`.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("ti-xla").join("compile")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an entry for this program and these options lives in.
    pub fn entry_path(&self, client: &Client, program: &str, options: &CompileOptions) -> PathBuf {
        let plugin = client.plugin();
        let plugin_hash = self.plugin_hash.get_or_init(|| {
            fs::read(plugin.path())
                .map(|bytes| hex128(&bytes))
                .unwrap_or_else(|_| "unreadable-plugin".into())
        });
        let (major, minor) = plugin.api_version();
        let key = entry_key(&[
            plugin_hash.as_bytes(),
            format!("api {major}.{minor}").as_bytes(),
            &options.encode(),
            host_cpu_signature().as_bytes(),
            // XLA_FLAGS change what the compiler emits, so an executable built under other
            // flags is not this program's.
            std::env::var("XLA_FLAGS").unwrap_or_default().as_bytes(),
            program.as_bytes(),
        ]);
        self.dir.join(format!("{key}.pjrt-exe"))
    }

    pub(crate) fn get_or_compile(
        &self,
        client: &Client,
        program: &str,
        options: &CompileOptions,
    ) -> Result<LoadedExecutable> {
        let path = self.entry_path(client, program, options);
        let key = entry_key_of(&path);
        let mut outcome = CacheOutcome::Miss;
        if let Ok(bytes) = fs::read(&path) {
            match unwrap_entry(&bytes, &key)
                .map(|payload| client.deserialize(payload, options.num_devices()))
            {
                Some(Ok(mut exe)) => {
                    exe.cache_outcome = CacheOutcome::Hit;
                    return Ok(exe);
                }
                _ => outcome = CacheOutcome::Replaced,
            }
        }
        let mut exe = client.compile_uncached(program, options)?;
        exe.cache_outcome = outcome;
        // A cache that cannot be written (read-only home, full disk) only costs speed.
        if let Ok(payload) = exe.serialize() {
            if let Err(e) = write_entry(&path, &key, &payload) {
                eprintln!(
                    "warning: could not write compile cache entry {}: {e}",
                    path.display()
                );
            }
        }
        Ok(exe)
    }
}

/// The key an entry's file name carries.
fn entry_key_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn unwrap_entry<'a>(bytes: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (stored, rest) = rest.split_at_checked(key.len())?;
    if stored != key.as_bytes() {
        return None;
    }
    let (len, rest) = rest.split_at_checked(8)?;
    let (sum, payload) = rest.split_at_checked(8)?;
    let len = u64::from_le_bytes(len.try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(sum.try_into().ok()?);
    (payload.len() == len && hash64(payload, 0) == sum).then_some(payload)
}

fn write_entry(path: &Path, key: &str, payload: &[u8]) -> anyhow::Result<()> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + key.len() + 16 + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&hash64(payload, 0).to_le_bytes());
    bytes.extend_from_slice(payload);
    crate::io::atomic_file::write_atomic(path, &bytes)
}

/// Executables carry machine code for the CPU they were built on ("Invalid target machine
/// features" elsewhere), so the host's model and feature flags are part of the key.
fn host_cpu_signature() -> String {
    let mut sig = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    if let Ok(info) = fs::read_to_string("/proc/cpuinfo") {
        for prefix in ["model name", "flags", "Features", "CPU part"] {
            if let Some(line) = info.lines().find(|l| l.starts_with(prefix)) {
                sig.push('|');
                sig.push_str(line);
            }
        }
    }
    sig
}

/// The hash of the parts, each length-prefixed so that no two lists of parts read alike.
fn entry_key(parts: &[&[u8]]) -> String {
    let mut key = Vec::new();
    for part in parts {
        key.extend_from_slice(&(part.len() as u64).to_le_bytes());
        key.extend_from_slice(part);
    }
    hex128(&key)
}

/// A fast, stable 64-bit hash (not cryptographic: it only needs to tell cache entries apart).
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    const P: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(P);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        h = (h ^ w).wrapping_mul(P).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(P).rotate_left(29);
    }
    // Final avalanche (splitmix64).
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn hex128(bytes: &[u8]) -> String {
    format!("{:016x}{:016x}", hash64(bytes, 1), hash64(bytes, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corruption_is_detected() {
        let dir = std::env::temp_dir().join(format!("ti-xla-cache-unit-{}", std::process::id()));
        let path = dir.join("x.pjrt-exe");
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let key = entry_key_of(&path);
        write_entry(&path, &key, &payload).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(unwrap_entry(&bytes, &key), Some(payload.as_slice()));
        // An entry under another program's name (two entries swapped) is not taken.
        assert_eq!(unwrap_entry(&bytes, "y"), None);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(unwrap_entry(&bytes, &key), None);
        assert_eq!(unwrap_entry(&bytes[..20], &key), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entry_key_depends_on_every_part_and_where_parts_split() {
        let base = entry_key(&[b"plugin", b"", b"program"]);
        assert_ne!(
            base,
            entry_key(&[b"plugin", b"--xla_cpu_use_xnnpack", b"program"])
        );
        assert_ne!(base, entry_key(&[b"plugi", b"n", b"program"]));
        assert_eq!(base, entry_key(&[b"plugin", b"", b"program"]));
    }

    #[test]
    fn hash_depends_on_every_byte_and_the_length() {
        let a = hash64(b"stablehlo.add", 0);
        assert_ne!(a, hash64(b"stablehlo.adc", 0));
        assert_ne!(hash64(&[0u8; 8], 0), hash64(&[0u8; 9], 0));
        assert_eq!(a, hash64(b"stablehlo.add", 0));
    }
}
