//! The entries of a zip archive as `torch.save` writes it: stored, not compressed, read in
//! place through the central directory (no ZIP64: embedding files are kilobytes).

use anyhow::{bail, Context, Result};

/// Stored (uncompressed) entries of a zip archive, as `torch.save` writes them.
pub fn stored_entries(bytes: &[u8]) -> Result<Vec<(String, &[u8])>> {
    let u16_at = |at: usize| -> Result<usize> {
        let b = bytes.get(at..at + 2).context("truncated zip archive")?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| -> Result<usize> {
        let b = bytes.get(at..at + 4).context("truncated zip archive")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // The end-of-central-directory record: the last one, after at most a 64 KiB comment.
    let floor = bytes.len().saturating_sub(22 + 0xFFFF);
    let end = (floor..=bytes.len().saturating_sub(22))
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06"))
        .context("no zip directory: the file is damaged or not a torch.save archive")?;
    let (count, mut at) = (u16_at(end + 10)?, u32_at(end + 16)?);
    if count == 0xFFFF || at == 0xFFFF_FFFF {
        bail!("ZIP64 archives (files over 4 GB) are not read; an embedding is a few KB");
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        if !bytes
            .get(at..)
            .is_some_and(|b| b.starts_with(b"PK\x01\x02"))
        {
            bail!("damaged zip directory");
        }
        let method = u16_at(at + 10)?;
        let size = u32_at(at + 20)?;
        let (name_len, extra, comment) = (u16_at(at + 28)?, u16_at(at + 30)?, u16_at(at + 32)?);
        let local = u32_at(at + 42)?;
        let name = bytes
            .get(at + 46..at + 46 + name_len)
            .context("truncated zip archive")?;
        let name = String::from_utf8_lossy(name).into_owned();
        if method != 0 {
            bail!("zip entry {name} is compressed; torch.save stores entries uncompressed");
        }
        if !bytes
            .get(local..)
            .is_some_and(|b| b.starts_with(b"PK\x03\x04"))
        {
            bail!("damaged zip entry {name}");
        }
        let start = local + 30 + u16_at(local + 26)? + u16_at(local + 28)?;
        let data = bytes
            .get(start..start + size)
            .with_context(|| format!("truncated zip entry {name}"))?;
        entries.push((name, data));
        at += 46 + name_len + extra + comment;
    }
    Ok(entries)
}
