//! Whether the source compresses what its tar sends (issue 16's P2): on a
//! slow link, `tar | gzip -1` on the source sends W1 in about half the
//! time; on a fast one, the compressor would be the bottleneck.
//!
//! The choice is made once per pass, by measuring: the link, by timing
//! 8 MiB of the source's `/dev/urandom` through the SSH session twice,
//! the faster counting (what the session carries, its crypto and both
//! CPUs included), against the speed each compressor reaches on one core
//! of a modest CPU. Only a pass
//! with at least [`WORTH_MEASURING`] to send measures; a smaller one sends
//! as it is.
//!
//! On failure (the measurement could not run) nothing is compressed; the
//! pass goes on as before.

use std::io::Read;
use std::time::Instant;

use crate::probe::inventory::TarFlavour;
use crate::probe::Capabilities;
use crate::ssh::Session;

/// A pass sending less than this does not measure the link.
pub const WORTH_MEASURING: u64 = 64 << 20;
/// What the link test sends...
const PROBE_BYTES: u64 = 8 << 20;
/// ...this many times (the fastest counts).
const LINK_TESTS: usize = 2;
/// Below this link speed (bytes/s), the source's `zstd -1 -T0` pays: it
/// compresses 300+ MB/s on one core of the lab's CPU. The lab's unshaped
/// veth measures 150–200 MB/s through SSH; there it gained nothing.
pub const ZSTD_BELOW: f64 = 150e6;
/// Below this, `gzip -1` pays: 40–70 MB/s on one core, for text and
/// binaries alike.
pub const GZIP_BELOW: f64 = 30e6;

/// A compressor on the source, between its tar and the SSH channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCompression {
    Zstd,
    Gzip,
}

impl SourceCompression {
    /// The filter the tar stream goes through on the source.
    pub fn filter(self) -> &'static str {
        match self {
            SourceCompression::Zstd => "zstd -q -1 -T0",
            SourceCompression::Gzip => "gzip -1",
        }
    }

    /// The reader that undoes it on the client.
    pub fn decoder<'a, R: Read + 'a>(self, input: R) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            SourceCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
            SourceCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        })
    }
}

/// The compressor for a link of `bytes_per_sec`, among those the source
/// has. Pure: the decision [`for_pass`] makes after measuring.
pub fn choose(caps: &Capabilities, bytes_per_sec: f64) -> Option<SourceCompression> {
    if caps.tar.flavour != TarFlavour::Gnu {
        return None;
    }
    let has = |c: &str| caps.compressors.iter().any(|x| x == c);
    if has("zstd") && bytes_per_sec < ZSTD_BELOW {
        Some(SourceCompression::Zstd)
    } else if has("gzip") && bytes_per_sec < GZIP_BELOW {
        Some(SourceCompression::Gzip)
    } else {
        None
    }
}

/// Measure the link when a pass sends `send_bytes`, and choose.
pub async fn for_pass(
    session: &Session,
    caps: &Capabilities,
    send_bytes: u64,
) -> Option<SourceCompression> {
    if send_bytes < WORTH_MEASURING || choose(caps, 0.0).is_none() {
        return None;
    }
    // The faster of two runs: one alone was sometimes slowed by whatever
    // else ran then (the unshaped veth measured 130 MB/s once in 20, and
    // the source compressed for nothing).
    let mut speed: f64 = 0.0;
    for _ in 0..LINK_TESTS {
        let started = Instant::now();
        let out = session
            .run(&format!("head -c {PROBE_BYTES} /dev/urandom"), b"")
            .await
            .ok()?;
        let secs = started.elapsed().as_secs_f64();
        if out.stdout.len() as u64 != PROBE_BYTES || secs <= 0.0 {
            tracing::debug!(
                "the link test sent {} bytes; not compressing",
                out.stdout.len()
            );
            return None;
        }
        speed = speed.max(PROBE_BYTES as f64 / secs);
    }
    let chosen = choose(caps, speed);
    tracing::info!(
        "link to the source: {:.1} MB/s; the source's tar output goes {}",
        speed / 1e6,
        chosen.map_or("as it is".to_string(), |c| format!(
            "through `{}`",
            c.filter()
        ))
    );
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn caps(flavour: TarFlavour, compressors: &[&str]) -> Capabilities {
        Capabilities::for_test(flavour, compressors)
    }

    #[test]
    fn the_link_and_the_source_s_tools_choose_the_compressor() {
        let both = caps(TarFlavour::Gnu, &["zstd", "gzip"]);
        let gzip = caps(TarFlavour::Gnu, &["gzip"]);
        assert_eq!(choose(&both, 12.5e6), Some(SourceCompression::Zstd));
        assert_eq!(choose(&both, 125e6), Some(SourceCompression::Zstd));
        assert_eq!(choose(&both, 400e6), None, "a fast link sends as it is");
        assert_eq!(choose(&gzip, 12.5e6), Some(SourceCompression::Gzip));
        assert_eq!(
            choose(&gzip, 125e6),
            None,
            "gzip would be slower than 1 Gbit/s"
        );
        assert_eq!(choose(&caps(TarFlavour::Busybox, &["gzip"]), 1e6), None);
        assert_eq!(choose(&caps(TarFlavour::Gnu, &[]), 1e6), None);
    }

    #[test]
    fn each_decoder_undoes_its_filter() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for (c, packed) in [(SourceCompression::Gzip, gz), (SourceCompression::Zstd, zs)] {
            let mut back = Vec::new();
            c.decoder(&packed[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{c:?}");
        }
    }
}
