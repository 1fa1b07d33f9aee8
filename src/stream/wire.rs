//! The wire format between the client and `hotclone agent`, version 2.
//!
//! The whole stream is one zstd stream. Inside it are frames:
//! `[u8 tag][u32 LE length][payload]`, in this order:
//!
//! ```text
//! Hello ( Entry | ( Entry | Append ) ( Data | Hole )* FileEnd | Remove | Attrs )* Done
//! ```
//!
//! A regular file is an `Entry` followed by its content as `Data` frames
//! (at most 1 MiB each) and `Hole` frames (a run of zero bytes, so sparse
//! and zero-filled regions cost nothing on the wire), then `FileEnd` with the
//! BLAKE3 of the whole logical content, zeros included. Every other kind is
//! a lone `Entry`. `Done` carries the sender's totals (regular files sent
//! with content, and their bytes).
//!
//! Delta ("sync") passes add two frames, both outside files:
//!
//! - `Remove` (payload: the raw path, same rules as [`EntryMeta::path`]):
//!   remove that path on the target, a directory with everything in it.
//!   Already missing is success.
//! - `Attrs` (payload: an [`EntryMeta`] like `Entry`): change only the owner,
//!   mode, mtime (and xattrs, when any are listed) of an entry that is
//!   already on the target with that kind. Nothing is created.
//!
//! - `Append` (payload: `[u64 LE offset][32-byte BLAKE3 of the first
//!   offset bytes][u8 base][EntryMeta]`): the file keeps its first `offset`
//!   bytes, which must hash to that BLAKE3, and gets the rest (`meta.size -
//!   offset` bytes, as Data and Hole frames, then FileEnd with their
//!   BLAKE3). Base 0: the bytes are those of the file on the target (one
//!   that only grew, a log). Base 1: those of the partial copy an
//!   interrupted pass left beside it (a resume). Acked like an entry, with
//!   the BLAKE3 of the whole new content.
//!
//! While a big file arrives, the agent also answers `part` lines: how much
//! of it the partial copy beside the old file holds (durably: the agent
//! fdatasyncs it first), so an interrupted transfer resumes from there
//! ([`RESUMABLE_MIN`], [`CHECKPOINT_EVERY`]).
//!
//! Version 2 added `Remove` (tag 7) and `Attrs` (tag 8); version 3 added
//! `Append` (tag 9).
//!
//! The agent answers on its stdout with one [`Ack`] line per `Entry`,
//! `Remove` and `Attrs`.

use std::fmt;
use std::io::{self, Read, Write};

use bincode::Options;
use serde::{Deserialize, Serialize};

pub use blake3::Hash as Digest;

/// "HOTCLONE", the first bytes of the Hello payload.
pub const MAGIC: &[u8; 8] = b"HOTCLONE";
/// The version this build speaks. Bump it on any incompatible change.
pub const VERSION: u32 = 3;
/// Largest Data payload.
pub const MAX_DATA: usize = 1 << 20;
/// Largest Entry and Attrs payload (path plus xattrs; Linux caps one xattr
/// at 64 KiB). Also the largest Remove payload (a path).
pub const MAX_META: usize = 16 << 20;
/// Granularity of hole detection: all-zero blocks of this size (aligned to
/// the file offset) become holes.
pub const HOLE_BLOCK: usize = 4096;
/// Files at least this big report `part` progress while they arrive.
pub const RESUMABLE_MIN: u64 = 256 << 10;
/// How often (content bytes) a `part` line is sent at most: every MiB of a
/// big file. Each is acked only once the partial copy is durable (by an
/// fdatasync, or the agent's group commit), so what a `part` books
/// survives a crash of the target host too; the interval keeps those
/// syncs cheap. Smaller files get one every quarter of their
/// size, at least [`RESUMABLE_MIN`] apart ([`checkpoint_every`]).
pub const CHECKPOINT_EVERY: u64 = 1 << 20;

/// The checkpoint interval for a file of `size` bytes: a quarter of it,
/// between [`RESUMABLE_MIN`] and [`CHECKPOINT_EVERY`] (a 512 KiB file gets
/// one, at its middle; a 200 MiB one every MiB).
pub fn checkpoint_every(size: u64) -> u64 {
    (size / 4).clamp(RESUMABLE_MIN, CHECKPOINT_EVERY)
}
/// Size of a big file's data frames: what tar has sent reaches the agent
/// (and its partial copy) without waiting for a whole [`MAX_DATA`].
pub const DATA_FRAME: u64 = 128 << 10;
/// Flush the zstd stream at the end of a file once this much was written
/// since the last flush, so the agent never waits long for a buffered tail.
const FLUSH_EVERY: u64 = 128 << 10;

const TAG_HELLO: u8 = 1;
const TAG_ENTRY: u8 = 2;
const TAG_DATA: u8 = 3;
const TAG_FILE_END: u8 = 4;
const TAG_DONE: u8 = 5;
const TAG_HOLE: u8 = 6;
const TAG_REMOVE: u8 = 7;
const TAG_ATTRS: u8 = 8;
const TAG_APPEND: u8 = 9;

/// What a file system entry is, with what its kind needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// Another name for `target`, a path relative to the root that was sent
    /// earlier in the same stream (or already exists on the target).
    Hardlink {
        target: Vec<u8>,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Relative to the root, no leading '/', raw bytes (non-UTF-8 allowed).
    /// The root itself is ".".
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including suid, sgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Content length for files; 0 for everything else.
    pub size: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryMeta {
    /// The path for messages (lossy for non-UTF-8 bytes).
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u32,
    },
    Entry(EntryMeta),
    Data(Vec<u8>),
    /// `len` zero bytes of the current file.
    Hole(u64),
    FileEnd {
        blake3: [u8; 32],
    },
    Done {
        files: u64,
        bytes: u64,
    },
    /// Remove this path (relative to the root, raw bytes, the rules of
    /// [`EntryMeta::path`]; the root itself is refused). A directory goes
    /// with everything in it. A path already missing is success.
    Remove(Vec<u8>),
    /// Set owner, mode (not for symlinks), mtime and, when the list is not
    /// empty, xattrs of an existing entry of the same kind. Creates nothing;
    /// `size` is ignored.
    Attrs(EntryMeta),
    /// Keep the first `offset` bytes of an existing regular file (whose
    /// BLAKE3 is `prefix`) and append the content that follows, up to
    /// `meta.size`.
    Append {
        meta: EntryMeta,
        offset: u64,
        prefix: [u8; 32],
        base: AppendBase,
    },
}

/// Where the bytes an [`Frame::Append`] keeps are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendBase {
    /// The file on the target: it only grew on the source.
    Existing,
    /// The partial copy an interrupted transfer left beside it.
    Partial,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the stream broke: {0}")]
    Io(#[from] io::Error),
    #[error("this is not a hotclone stream (it starts with {found:?}, not \"HOTCLONE\"); is the other side really `hotclone agent`?")]
    BadMagic { found: String },
    #[error("the sender speaks wire version {theirs}, this hotclone speaks version {ours}; run the same hotclone release on both sides")]
    Version { theirs: u32, ours: u32 },
    #[error("corrupt stream: {0}")]
    Corrupt(String),
    #[error(
        "the stream ended {0}; the sender stopped or the connection dropped, run the pass again"
    )]
    Truncated(&'static str),
}

fn meta_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(MAX_META as u64)
}

fn max_len(tag: u8) -> Option<usize> {
    match tag {
        TAG_HELLO => Some(12),
        TAG_ENTRY => Some(MAX_META),
        TAG_DATA => Some(MAX_DATA),
        TAG_FILE_END => Some(32),
        TAG_DONE => Some(16),
        TAG_HOLE => Some(8),
        TAG_REMOVE => Some(MAX_META),
        TAG_ATTRS => Some(MAX_META),
        TAG_APPEND => Some(MAX_META + 41),
        _ => None,
    }
}

impl Frame {
    fn tag(&self) -> u8 {
        match self {
            Frame::Hello { .. } => TAG_HELLO,
            Frame::Entry(_) => TAG_ENTRY,
            Frame::Data(_) => TAG_DATA,
            Frame::Hole(_) => TAG_HOLE,
            Frame::FileEnd { .. } => TAG_FILE_END,
            Frame::Done { .. } => TAG_DONE,
            Frame::Remove(_) => TAG_REMOVE,
            Frame::Attrs(_) => TAG_ATTRS,
            Frame::Append { .. } => TAG_APPEND,
        }
    }

    /// Encodes the frame as `[tag][u32 LE len][payload]`.
    pub fn encode(&self, out: &mut impl Write) -> Result<(), WireError> {
        let payload: std::borrow::Cow<'_, [u8]> = match self {
            Frame::Hello { version } => {
                let mut p = MAGIC.to_vec();
                p.extend_from_slice(&version.to_le_bytes());
                p.into()
            }
            Frame::Entry(meta) | Frame::Attrs(meta) => self.encode_meta(meta)?.into(),
            Frame::Append {
                meta,
                offset,
                prefix,
                base,
            } => {
                let mut p = offset.to_le_bytes().to_vec();
                p.extend_from_slice(prefix);
                p.push(match base {
                    AppendBase::Existing => 0,
                    AppendBase::Partial => 1,
                });
                p.extend_from_slice(&self.encode_meta(meta)?);
                p.into()
            }
            Frame::Remove(path) => path.as_slice().into(),
            Frame::Data(bytes) => bytes.as_slice().into(),
            Frame::Hole(len) => len.to_le_bytes().to_vec().into(),
            Frame::FileEnd { blake3 } => blake3.as_slice().into(),
            Frame::Done { files, bytes } => {
                let mut p = files.to_le_bytes().to_vec();
                p.extend_from_slice(&bytes.to_le_bytes());
                p.into()
            }
        };
        let limit = max_len(self.tag()).unwrap_or(0);
        if payload.len() > limit {
            return Err(WireError::Corrupt(format!(
                "a frame of {} bytes is over the limit of {limit} for its kind",
                payload.len()
            )));
        }
        out.write_all(&[self.tag()])?;
        out.write_all(&(payload.len() as u32).to_le_bytes())?;
        out.write_all(&payload)?;
        Ok(())
    }

    fn encode_meta(&self, meta: &EntryMeta) -> Result<Vec<u8>, WireError> {
        meta_options().serialize(meta).map_err(|e| {
            WireError::Corrupt(format!(
                "cannot encode the {} frame for {}: {e}",
                self.name(),
                meta.display_path()
            ))
        })
    }

    /// Decodes one frame. `Ok(None)` at a clean end (no byte of a next frame).
    pub fn decode(input: &mut impl Read) -> Result<Option<Frame>, WireError> {
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < head.len() {
            match input.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(WireError::Truncated("inside a frame header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let tag = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let limit =
            max_len(tag).ok_or_else(|| WireError::Corrupt(format!("unknown frame tag {tag}")))?;
        if len > limit {
            return Err(WireError::Corrupt(format!(
                "frame tag {tag} claims {len} bytes, more than the limit of {limit}"
            )));
        }
        let mut payload = vec![0u8; len];
        input.read_exact(&mut payload).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => WireError::Truncated("inside a frame"),
            _ => WireError::Io(e),
        })?;
        let exact = |n: usize| {
            if len == n {
                Ok(())
            } else {
                Err(WireError::Corrupt(format!(
                    "frame tag {tag} has {len} bytes, expected {n}"
                )))
            }
        };
        let frame =
            match tag {
                TAG_HELLO => {
                    if len < 8 || &payload[..8] != MAGIC {
                        return Err(WireError::BadMagic {
                            found: String::from_utf8_lossy(&payload[..len.min(8)]).into_owned(),
                        });
                    }
                    exact(12)?;
                    let version = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes"));
                    Frame::Hello { version }
                }
                TAG_ENTRY => {
                    Frame::Entry(meta_options().deserialize(&payload).map_err(|e| {
                        WireError::Corrupt(format!("an entry does not decode: {e}"))
                    })?)
                }
                TAG_ATTRS => Frame::Attrs(meta_options().deserialize(&payload).map_err(|e| {
                    WireError::Corrupt(format!("an Attrs frame does not decode: {e}"))
                })?),
                TAG_APPEND => {
                    if len < 41 {
                        return Err(WireError::Corrupt(format!(
                            "an Append frame of {len} bytes, shorter than its fixed 41"
                        )));
                    }
                    Frame::Append {
                        offset: u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
                        prefix: payload[8..40].try_into().expect("32 bytes"),
                        base: match payload[40] {
                            0 => AppendBase::Existing,
                            1 => AppendBase::Partial,
                            b => {
                                return Err(WireError::Corrupt(format!(
                                    "an Append frame with base {b} (0 or 1)"
                                )))
                            }
                        },
                        meta: meta_options().deserialize(&payload[41..]).map_err(|e| {
                            WireError::Corrupt(format!("an Append frame does not decode: {e}"))
                        })?,
                    }
                }
                TAG_REMOVE => Frame::Remove(payload),
                TAG_DATA => Frame::Data(payload),
                TAG_HOLE => {
                    exact(8)?;
                    Frame::Hole(u64::from_le_bytes(
                        payload[..8].try_into().expect("8 bytes"),
                    ))
                }
                TAG_FILE_END => {
                    exact(32)?;
                    Frame::FileEnd {
                        blake3: payload[..32].try_into().expect("32 bytes"),
                    }
                }
                TAG_DONE => {
                    exact(16)?;
                    Frame::Done {
                        files: u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
                        bytes: u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes")),
                    }
                }
                _ => unreachable!("max_len rejected unknown tags"),
            };
        Ok(Some(frame))
    }
}

/// Writes a stream: Hello on creation, then entries and files, Done on
/// [`WireWriter::finish`].
pub struct WireWriter<W: Write> {
    enc: zstd::stream::write::Encoder<'static, W>,
    files: u64,
    bytes: u64,
    since_flush: u64,
    buf: Vec<u8>,
    on_entry: Option<EntryHook>,
}

/// Called with every entry's metadata just before it is sent.
pub type EntryHook = Box<dyn FnMut(&EntryMeta) + Send>;

impl<W: Write> WireWriter<W> {
    /// Starts a stream at zstd level 3.
    pub fn new(out: W) -> Result<Self, WireError> {
        Self::with_level(out, 3)
    }

    pub fn with_level(out: W, level: i32) -> Result<Self, WireError> {
        let enc = zstd::stream::write::Encoder::new(out, level)?;
        let mut w = WireWriter {
            enc,
            files: 0,
            bytes: 0,
            since_flush: 0,
            buf: Vec::new(),
            on_entry: None,
        };
        w.frame(&Frame::Hello { version: VERSION })?;
        Ok(w)
    }

    /// Writes one raw frame. The typed methods below are what senders use;
    /// this is the lower level (tests use it to send deliberately bad streams).
    pub fn frame(&mut self, frame: &Frame) -> Result<(), WireError> {
        frame.encode(&mut self.enc)?;
        self.since_flush += 5 + match frame {
            Frame::Data(d) | Frame::Remove(d) => d.len() as u64,
            _ => 16,
        };
        Ok(())
    }

    /// Have `hook` see every entry (with or without content) before it is
    /// sent: the client remembers what it sent, to book the agent's acks.
    pub fn on_entry(&mut self, hook: EntryHook) {
        self.on_entry = Some(hook);
    }

    fn announce(&mut self, meta: &EntryMeta) {
        if let Some(hook) = self.on_entry.as_mut() {
            hook(meta);
        }
    }

    /// Sends an entry that has no content (anything but a regular file).
    pub fn entry(&mut self, meta: &EntryMeta) -> Result<(), WireError> {
        self.announce(meta);
        self.frame(&Frame::Entry(meta.clone()))?;
        self.maybe_flush()
    }

    /// Asks the agent to remove `path` (relative to the root), recursively
    /// for a directory. Acked like an entry; already missing is `ok`.
    pub fn remove(&mut self, path: &[u8]) -> Result<(), WireError> {
        self.frame(&Frame::Remove(path.to_vec()))?;
        self.maybe_flush()
    }

    /// Asks the agent to change only the metadata of `meta.path`, which
    /// must already be on the target with the kind `meta.kind` (`size` is
    /// ignored, empty `xattrs` leave the existing ones alone). Does not
    /// count in the Done totals.
    pub fn attrs(&mut self, meta: &EntryMeta) -> Result<(), WireError> {
        self.frame(&Frame::Attrs(meta.clone()))?;
        self.maybe_flush()
    }

    /// Sends a regular file: its entry, exactly `meta.size` bytes read from
    /// `data` (as Data and Hole frames), and FileEnd with their BLAKE3, which
    /// is returned. Fewer bytes than `meta.size` is an error (the stream is
    /// then unusable: the agent waits for the rest).
    pub fn file(&mut self, meta: &EntryMeta, data: &mut dyn Read) -> Result<Digest, WireError> {
        self.announce(meta);
        self.frame(&Frame::Entry(meta.clone()))?;
        self.content(meta.size, data)
    }

    /// Sends the tail of a file that only grew: the target keeps its first
    /// `offset` bytes (BLAKE3 `prefix`) and gets exactly `meta.size -
    /// offset` bytes from `data`, then FileEnd with their BLAKE3, which is
    /// returned. Fewer bytes is an error, as for [`WireWriter::file`].
    pub fn append(
        &mut self,
        meta: &EntryMeta,
        (offset, prefix, base): (u64, [u8; 32], AppendBase),
        data: &mut dyn Read,
    ) -> Result<Digest, WireError> {
        let tail = meta.size.checked_sub(offset).ok_or_else(|| {
            WireError::Corrupt(format!(
                "{}: appending at {offset}, past its size of {}",
                meta.display_path(),
                meta.size
            ))
        })?;
        self.announce(meta);
        self.frame(&Frame::Append {
            meta: meta.clone(),
            offset,
            prefix,
            base,
        })?;
        self.content(tail, data)
    }

    /// `len` bytes of content from `data`, then FileEnd; counted in the
    /// Done totals (as `len` bytes).
    fn content(&mut self, len: u64, data: &mut dyn Read) -> Result<Digest, WireError> {
        let mut hasher = blake3::Hasher::new();
        let mut remaining = len;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(MAX_DATA, 0);
        let result = (|| {
            let mut hole: u64 = 0;
            while remaining > 0 {
                // Frames of DATA_FRAME bytes: what tar has sent reaches
                // the agent (and its partial copy) without waiting for a
                // whole MiB, so a cut-off file resumes near where it
                // stopped.
                let want = remaining.min(DATA_FRAME) as usize;
                let n = read_full(data, &mut buf[..want])?;
                if n < want {
                    return Err(WireError::Truncated("in the middle of a file's data: the reader gave fewer bytes than the entry's size"));
                }
                let chunk = &buf[..n];
                hasher.update(chunk);
                // Split into HOLE_BLOCK blocks; chunks start at multiples of
                // DATA_FRAME, so blocks are aligned to the file offset (to the
                // offset of an appended tail: the agent decides its holes
                // itself).
                let mut run_start = 0;
                let mut pos = 0;
                while pos < n {
                    let end = (pos + HOLE_BLOCK).min(n);
                    if is_zero(&chunk[pos..end]) {
                        if run_start < pos {
                            self.flush_hole(&mut hole)?;
                            self.frame(&Frame::Data(chunk[run_start..pos].to_vec()))?;
                        }
                        hole += (end - pos) as u64;
                        run_start = end;
                    }
                    pos = end;
                }
                if run_start < n {
                    self.flush_hole(&mut hole)?;
                    self.frame(&Frame::Data(chunk[run_start..n].to_vec()))?;
                }
                remaining -= n as u64;
            }
            self.flush_hole(&mut hole)?;
            Ok(())
        })();
        self.buf = buf;
        result?;
        let digest = hasher.finalize();
        self.frame(&Frame::FileEnd {
            blake3: *digest.as_bytes(),
        })?;
        self.files += 1;
        self.bytes += len;
        self.maybe_flush()?;
        Ok(digest)
    }

    fn flush_hole(&mut self, hole: &mut u64) -> Result<(), WireError> {
        if *hole > 0 {
            self.frame(&Frame::Hole(*hole))?;
            *hole = 0;
        }
        Ok(())
    }

    fn maybe_flush(&mut self) -> Result<(), WireError> {
        if self.since_flush >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Pushes everything written so far through zstd to the output, so the
    /// agent can act on it. Call it at batch boundaries.
    pub fn flush(&mut self) -> Result<(), WireError> {
        self.enc.flush()?;
        self.since_flush = 0;
        Ok(())
    }

    /// Files and content bytes sent so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.files, self.bytes)
    }

    /// Writes Done, ends the zstd stream and returns the output.
    pub fn finish(mut self) -> Result<W, WireError> {
        let (files, bytes) = (self.files, self.bytes);
        self.frame(&Frame::Done { files, bytes })?;
        let mut out = self.enc.finish()?;
        out.flush()?;
        Ok(out)
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// True when every byte is zero.
pub fn is_zero(bytes: &[u8]) -> bool {
    let (prefix, words, suffix) = unsafe { bytes.align_to::<u64>() };
    prefix.iter().all(|&b| b == 0)
        && words.iter().all(|&w| w == 0)
        && suffix.iter().all(|&b| b == 0)
}

/// Reads a stream: checks Hello on creation, then yields frames.
pub struct WireReader<R: Read> {
    dec: zstd::stream::read::Decoder<'static, io::BufReader<R>>,
    done: bool,
}

impl<R: Read> WireReader<R> {
    /// Reads and checks Hello (magic and version).
    pub fn new(input: R) -> Result<Self, WireError> {
        let dec = zstd::stream::read::Decoder::new(input)?;
        let mut r = WireReader { dec, done: false };
        match r.next_raw()? {
            Some(Frame::Hello { version }) if version == VERSION => Ok(r),
            Some(Frame::Hello { version }) => Err(WireError::Version {
                theirs: version,
                ours: VERSION,
            }),
            Some(other) => Err(WireError::Corrupt(format!(
                "the stream starts with {}, not Hello",
                other.name()
            ))),
            None => Err(WireError::Truncated("before Hello")),
        }
    }

    fn next_raw(&mut self) -> Result<Option<Frame>, WireError> {
        Frame::decode(&mut self.dec).map_err(|e| match e {
            // zstd reports a cut-off compressed stream as an I/O error.
            WireError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                WireError::Truncated("inside a compressed block")
            }
            other => other,
        })
    }

    /// The next frame; `Ok(None)` after Done. The stream ending before Done
    /// is an error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.done {
            return Ok(None);
        }
        match self.next_raw()? {
            None => Err(WireError::Truncated("before Done")),
            Some(Frame::Hello { .. }) => Err(WireError::Corrupt(
                "a second Hello in the middle of the stream".into(),
            )),
            Some(f @ Frame::Done { .. }) => {
                self.done = true;
                Ok(Some(f))
            }
            Some(f) => Ok(Some(f)),
        }
    }
}

impl Frame {
    /// The frame's kind, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Entry(_) => "Entry",
            Frame::Data(_) => "Data",
            Frame::Hole(_) => "Hole",
            Frame::FileEnd { .. } => "FileEnd",
            Frame::Done { .. } => "Done",
            Frame::Remove(_) => "Remove",
            Frame::Attrs(_) => "Attrs",
            Frame::Append { .. } => "Append",
        }
    }
}

/// One line the agent writes back per Entry, Remove and Attrs frame, and
/// the last line.
///
/// ```text
/// ok <hex path> <blake3 hex | ->   written (removed, changed) durably; files with their digest
/// warn <hex path> <reason>         written, but something was not kept (an xattr)
/// bad <hex path> <reason>          not written
/// part <hex path> <offset> <blake3 hex>   a big file's partial copy so far
/// done files=N bytes=N
/// ```
///
/// Paths are hex-encoded raw bytes, so any name survives; reasons are one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Ok {
        path: Vec<u8>,
        digest: Option<[u8; 32]>,
    },
    Warn {
        path: Vec<u8>,
        reason: String,
    },
    Bad {
        path: Vec<u8>,
        reason: String,
    },
    /// The partial copy of a big file being received holds its first
    /// `offset` bytes, whose BLAKE3 is `digest` (written, not fsynced: a
    /// resume checks them again).
    Part {
        path: Vec<u8>,
        offset: u64,
        digest: [u8; 32],
    },
    Done {
        files: u64,
        bytes: u64,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("the agent sent an unreadable acknowledgement {line:?}: {why}")]
pub struct AckParseError {
    pub line: String,
    pub why: &'static str,
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ack::Ok { path, digest } => {
                write!(f, "ok {} ", hex(path))?;
                match digest {
                    Some(d) => f.write_str(&hex(d)),
                    None => f.write_str("-"),
                }
            }
            Ack::Warn { path, reason } => write!(f, "warn {} {}", hex(path), one_line(reason)),
            Ack::Bad { path, reason } => write!(f, "bad {} {}", hex(path), one_line(reason)),
            Ack::Part {
                path,
                offset,
                digest,
            } => write!(f, "part {} {offset} {}", hex(path), hex(digest)),
            Ack::Done { files, bytes } => write!(f, "done files={files} bytes={bytes}"),
        }
    }
}

impl Ack {
    /// Parses one line (without or with its trailing newline).
    pub fn parse(line: &str) -> Result<Ack, AckParseError> {
        let err = |why| AckParseError {
            line: line.to_string(),
            why,
        };
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (word, rest) = line.split_once(' ').ok_or_else(|| err("no space"))?;
        if word == "done" {
            let (f, b) = rest
                .split_once(' ')
                .ok_or_else(|| err("done needs files= and bytes="))?;
            let files = f
                .strip_prefix("files=")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err("bad files="))?;
            let bytes = b
                .strip_prefix("bytes=")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err("bad bytes="))?;
            return Ok(Ack::Done { files, bytes });
        }
        let (p, tail) = rest.split_once(' ').ok_or_else(|| err("no path"))?;
        let path = unhex(p).ok_or_else(|| err("the path is not hex"))?;
        let digest = |hex: &str| {
            unhex(hex)
                .filter(|d| d.len() == 32)
                .map(|d| <[u8; 32]>::try_from(d).expect("32 bytes"))
                .ok_or_else(|| err("the digest is not 64 hex digits"))
        };
        match word {
            "ok" if tail == "-" => Ok(Ack::Ok { path, digest: None }),
            "ok" => Ok(Ack::Ok {
                path,
                digest: Some(digest(tail)?),
            }),
            "part" => {
                let (offset, d) = tail
                    .split_once(' ')
                    .ok_or_else(|| err("part needs an offset and a digest"))?;
                Ok(Ack::Part {
                    path,
                    offset: offset.parse().map_err(|_| err("bad part offset"))?,
                    digest: digest(d)?,
                })
            }
            "warn" => Ok(Ack::Warn {
                path,
                reason: tail.to_string(),
            }),
            "bad" => Ok(Ack::Bad {
                path,
                reason: tail.to_string(),
            }),
            _ => Err(err("unknown kind (expected ok, warn, bad or done)")),
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Lowercase hex of raw bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Inverse of [`hex`]; `None` for odd lengths or non-hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &[u8], kind: EntryKind, size: u64) -> EntryMeta {
        EntryMeta {
            path: path.to_vec(),
            kind,
            mode: 0o4755,
            uid: 1234,
            gid: 2345,
            mtime: -5,
            mtime_nsec: 999_999_999,
            size,
            xattrs: vec![
                (b"user.a".to_vec(), vec![0, 1, 0xff]),
                (b"security.selinux".to_vec(), b"x_t\0".to_vec()),
            ],
        }
    }

    fn encode(f: impl FnOnce(&mut WireWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = WireWriter::new(Vec::new()).unwrap();
        f(&mut w);
        w.finish().unwrap()
    }

    fn frames(stream: &[u8]) -> Result<Vec<Frame>, WireError> {
        let mut r = WireReader::new(stream)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_every_kind() {
        let long: Vec<u8> = (0..300)
            .map(|i| {
                if i % 50 == 49 {
                    b'/'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect();
        let kinds = vec![
            meta(b"dir\xff\n", EntryKind::Dir, 0),
            meta(
                &long,
                EntryKind::Symlink {
                    target: b"../\xfe/x".to_vec(),
                },
                0,
            ),
            meta(
                b"h",
                EntryKind::Hardlink {
                    target: b"dir\xff\n/f".to_vec(),
                },
                0,
            ),
            meta(b"c", EntryKind::CharDev { major: 1, minor: 3 }, 0),
            meta(
                b"b",
                EntryKind::BlockDev {
                    major: 7,
                    minor: 200,
                },
                0,
            ),
            meta(b"p", EntryKind::Fifo, 0),
        ];
        // 1 MiB + 5 bytes with an aligned zero block in the middle and a zero tail.
        let mut content = vec![7u8; MAX_DATA + 5];
        content[8192..12288].fill(0);
        content[MAX_DATA..].fill(0);
        let file = meta(b"dir\xff\n/f", EntryKind::File, content.len() as u64);
        let mut digest = None;
        let stream = encode(|w| {
            for k in &kinds {
                w.entry(k).unwrap();
            }
            digest = Some(w.file(&file, &mut content.as_slice()).unwrap());
        });
        assert_eq!(digest.unwrap(), blake3::hash(&content));
        let got = frames(&stream).unwrap();
        let mut want: Vec<Frame> = kinds.into_iter().map(Frame::Entry).collect();
        want.push(Frame::Entry(file));
        want.push(Frame::Data(vec![7; 8192]));
        want.push(Frame::Hole(4096));
        // Data frames end at multiples of DATA_FRAME.
        want.push(Frame::Data(vec![7; DATA_FRAME as usize - 12288]));
        for _ in 1..MAX_DATA / DATA_FRAME as usize {
            want.push(Frame::Data(vec![7; DATA_FRAME as usize]));
        }
        want.push(Frame::Hole(5));
        want.push(Frame::FileEnd {
            blake3: *blake3::hash(&content).as_bytes(),
        });
        want.push(Frame::Done {
            files: 1,
            bytes: content.len() as u64,
        });
        assert_eq!(got, want);
    }

    /// The local image target's level (`LocalImage::wire_level`), zstd's
    /// --fast=1000, is one zstd accepts and the agent reads back.
    #[test]
    fn a_stream_at_the_fastest_level_round_trips() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let file = meta(b"f", EntryKind::File, content.len() as u64);
        let mut w = WireWriter::with_level(Vec::new(), -1000).unwrap();
        w.file(&file, &mut content.as_slice()).unwrap();
        let stream = w.finish().unwrap();
        let data: Vec<u8> = frames(&stream)
            .unwrap()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Data(d) => Some(d),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(data, content);
    }

    #[test]
    fn an_appended_tail_round_trips_with_its_offset_and_prefix_digest() {
        let log = meta(b"var/log/app.log", EntryKind::File, 100);
        let stream = encode(|w| {
            let at = (90, [3; 32], AppendBase::Partial);
            let d = w.append(&log, at, &mut &[b'x'; 10][..]).unwrap();
            assert_eq!(d, blake3::hash(&[b'x'; 10]));
            let past = (101, [3; 32], AppendBase::Existing);
            assert!(w.append(&log, past, &mut &b""[..]).is_err());
        });
        assert_eq!(
            frames(&stream).unwrap(),
            vec![
                Frame::Append {
                    meta: log,
                    offset: 90,
                    prefix: [3; 32],
                    base: AppendBase::Partial,
                },
                Frame::Data(vec![b'x'; 10]),
                Frame::FileEnd {
                    blake3: *blake3::hash(&[b'x'; 10]).as_bytes()
                },
                Frame::Done {
                    files: 1,
                    bytes: 10
                },
            ]
        );
    }

    #[test]
    fn short_file_data_is_an_error() {
        let mut w = WireWriter::new(Vec::new()).unwrap();
        let err = w
            .file(&meta(b"f", EntryKind::File, 10), &mut &b"12345"[..])
            .unwrap_err();
        assert!(matches!(err, WireError::Truncated(_)), "{err}");
    }

    #[test]
    fn wrong_version_names_both() {
        let mut raw = Vec::new();
        Frame::Hello { version: 7 }.encode(&mut raw).unwrap();
        let stream = zstd::encode_all(raw.as_slice(), 3).unwrap();
        let err = WireReader::new(stream.as_slice()).err().unwrap();
        assert!(matches!(
            err,
            WireError::Version {
                theirs: 7,
                ours: VERSION
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("version 7") && msg.contains(&format!("version {VERSION}")),
            "{msg}"
        );
        // Older senders (version 1: no Remove, no Attrs; 2: no Append) are
        // refused too.
        for old in [1, 2] {
            let mut raw = Vec::new();
            Frame::Hello { version: old }.encode(&mut raw).unwrap();
            let stream = zstd::encode_all(raw.as_slice(), 3).unwrap();
            assert!(matches!(
                WireReader::new(stream.as_slice()).err().unwrap(),
                WireError::Version { theirs, ours: 3 } if theirs == old
            ));
        }
    }

    #[test]
    fn wrong_magic_is_an_error() {
        let raw = [
            &[TAG_HELLO, 12, 0, 0, 0][..],
            b"NOTCLONE",
            &1u32.to_le_bytes(),
        ]
        .concat();
        let stream = zstd::encode_all(raw.as_slice(), 3).unwrap();
        assert!(matches!(
            WireReader::new(stream.as_slice()),
            Err(WireError::BadMagic { .. })
        ));
        // Not zstd at all.
        assert!(WireReader::new(&b"GET / HTTP/1.1\r\n"[..]).is_err());
    }

    fn raw_stream(frames_after_hello: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        Frame::Hello { version: VERSION }.encode(&mut raw).unwrap();
        raw.extend_from_slice(frames_after_hello);
        zstd::encode_all(raw.as_slice(), 3).unwrap()
    }

    #[test]
    fn corrupt_lengths_and_short_frames_are_errors() {
        // A Data frame claiming 4 GiB: refused before any allocation.
        let err = frames(&raw_stream(&[TAG_DATA, 0xff, 0xff, 0xff, 0xff, 1, 2])).unwrap_err();
        assert!(
            matches!(err, WireError::Corrupt(ref m) if m.contains("4294967295")),
            "{err}"
        );
        // A frame cut short.
        let err = frames(&raw_stream(&[TAG_DATA, 10, 0, 0, 0, 1, 2, 3])).unwrap_err();
        assert!(matches!(err, WireError::Truncated(_)), "{err}");
        // A header cut short.
        let err = frames(&raw_stream(&[TAG_DATA, 10])).unwrap_err();
        assert!(matches!(err, WireError::Truncated(_)), "{err}");
        // An unknown tag.
        let err = frames(&raw_stream(&[99, 0, 0, 0, 0])).unwrap_err();
        assert!(matches!(err, WireError::Corrupt(_)), "{err}");
        // FileEnd with a wrong length.
        let err = frames(&raw_stream(&[TAG_FILE_END, 3, 0, 0, 0, 1, 2, 3])).unwrap_err();
        assert!(matches!(err, WireError::Corrupt(_)), "{err}");
        // Garbage as an entry.
        let err = frames(&raw_stream(&[TAG_ENTRY, 3, 0, 0, 0, 1, 2, 3])).unwrap_err();
        assert!(matches!(err, WireError::Corrupt(_)), "{err}");
        // No Done.
        let err = frames(&raw_stream(&[])).unwrap_err();
        assert!(matches!(err, WireError::Truncated("before Done")), "{err}");
        // The compressed stream itself cut in half.
        let full = encode(|w| w.entry(&meta(b"d", EntryKind::Dir, 0)).unwrap());
        assert!(frames(&full[..full.len() / 2]).is_err());
    }

    #[test]
    fn remove_and_attrs_round_trip() {
        let attrs = meta(b"dir\xff\n/f", EntryKind::File, 0);
        let sym = meta(
            b"l",
            EntryKind::Symlink {
                target: b"x".to_vec(),
            },
            0,
        );
        let content = b"abc".to_vec();
        let file = meta(b"f", EntryKind::File, 3);
        let stream = encode(|w| {
            w.remove(b"gone/\xfe\n").unwrap();
            w.attrs(&attrs).unwrap();
            w.file(&file, &mut content.as_slice()).unwrap();
            w.attrs(&sym).unwrap();
            w.remove(b"").unwrap();
            // Neither counts in the totals.
            assert_eq!(w.totals(), (1, 3));
        });
        assert_eq!(
            frames(&stream).unwrap(),
            vec![
                Frame::Remove(b"gone/\xfe\n".to_vec()),
                Frame::Attrs(attrs),
                Frame::Entry(file),
                Frame::Data(content.clone()),
                Frame::FileEnd {
                    blake3: *blake3::hash(&content).as_bytes()
                },
                Frame::Attrs(sym),
                Frame::Remove(vec![]),
                Frame::Done { files: 1, bytes: 3 },
            ]
        );
        // The raw layout: tag, length, the path bytes as they are.
        let mut raw = Vec::new();
        Frame::Remove(b"a/b".to_vec()).encode(&mut raw).unwrap();
        assert_eq!(raw, [&[TAG_REMOVE, 3, 0, 0, 0][..], b"a/b"].concat());
        let mut raw = Vec::new();
        Frame::Attrs(meta(b"p", EntryKind::Fifo, 0))
            .encode(&mut raw)
            .unwrap();
        assert_eq!(raw[0], TAG_ATTRS);
        assert_eq!(
            Frame::decode(&mut raw.as_slice()).unwrap(),
            Some(Frame::Attrs(meta(b"p", EntryKind::Fifo, 0)))
        );
        assert_eq!(Frame::Remove(vec![]).name(), "Remove");
        assert_eq!(Frame::Attrs(meta(b"p", EntryKind::Fifo, 0)).name(), "Attrs");
    }

    #[test]
    fn corrupt_and_oversized_remove_and_attrs_are_errors() {
        let over = (MAX_META as u32 + 1).to_le_bytes();
        // Lengths over the limit: refused from the header alone.
        for tag in [TAG_REMOVE, TAG_ATTRS] {
            let err = frames(&raw_stream(&[&[tag][..], &over, b"xx"].concat())).unwrap_err();
            assert!(
                matches!(err, WireError::Corrupt(ref m) if m.contains(&format!("tag {tag} claims {}", MAX_META + 1))),
                "{err}"
            );
            // Cut short.
            let err = frames(&raw_stream(&[tag, 10, 0, 0, 0, 1, 2])).unwrap_err();
            assert!(matches!(err, WireError::Truncated(_)), "{err}");
        }
        // Garbage as Attrs; an Entry's bytes with one more trailing byte.
        let err = frames(&raw_stream(&[TAG_ATTRS, 3, 0, 0, 0, 1, 2, 3])).unwrap_err();
        assert!(
            matches!(err, WireError::Corrupt(ref m) if m.contains("Attrs")),
            "{err}"
        );
        let mut raw = Vec::new();
        Frame::Attrs(meta(b"p", EntryKind::Fifo, 0))
            .encode(&mut raw)
            .unwrap();
        let len = u32::from_le_bytes(raw[1..5].try_into().unwrap()) + 1;
        raw[1..5].copy_from_slice(&len.to_le_bytes());
        raw.push(0);
        let err = frames(&raw_stream(&raw)).unwrap_err();
        assert!(matches!(err, WireError::Corrupt(_)), "{err}");
        // An Attrs whose kind tag is out of range.
        let mut raw = Vec::new();
        Frame::Attrs(meta(b"p", EntryKind::Fifo, 0))
            .encode(&mut raw)
            .unwrap();
        // path: u64 length + 1 byte, then the u32 enum tag.
        let kind_at = 5 + 8 + 1;
        raw[kind_at..kind_at + 4].copy_from_slice(&99u32.to_le_bytes());
        let err = frames(&raw_stream(&raw)).unwrap_err();
        assert!(matches!(err, WireError::Corrupt(_)), "{err}");
        // The sender refuses to encode an oversized Remove.
        let err = Frame::Remove(vec![b'a'; MAX_META + 1])
            .encode(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, WireError::Corrupt(_)), "{err}");
        let mut w = WireWriter::new(Vec::new()).unwrap();
        assert!(w.remove(&vec![b'a'; MAX_META + 1]).is_err());
        // ... and an Attrs whose xattrs do not fit.
        let mut big = meta(b"f", EntryKind::File, 0);
        big.xattrs = vec![(b"user.big".to_vec(), vec![1; MAX_META])];
        assert!(matches!(
            Frame::Attrs(big).encode(&mut Vec::new()).unwrap_err(),
            WireError::Corrupt(_)
        ));
    }

    #[test]
    fn ack_round_trip_with_odd_bytes() {
        let acks = vec![
            Ack::Ok {
                path: b"a b\n\xff\x00/c".to_vec(),
                digest: Some([0xab; 32]),
            },
            Ack::Ok {
                path: b".".to_vec(),
                digest: None,
            },
            Ack::Warn {
                path: b"\xfe".to_vec(),
                reason: "xattr user.x not kept: EPERM".into(),
            },
            Ack::Bad {
                path: b"../escape".to_vec(),
                reason: "a '..' component is refused".into(),
            },
            Ack::Done {
                files: 3,
                bytes: 9_663_676_416,
            },
            Ack::Part {
                path: b"big".to_vec(),
                offset: 131_072,
                digest: [0xcd; 32],
            },
        ];
        for a in &acks {
            let line = format!("{a}\n");
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(&Ack::parse(&line).unwrap(), a);
        }
        assert_eq!(
            acks[0].to_string(),
            format!("ok 6120620aff002f63 {}", "ab".repeat(32))
        );
        assert_eq!(acks[4].to_string(), "done files=3 bytes=9663676416");
        // A reason with a newline stays one line.
        let a = Ack::Bad {
            path: b"x".to_vec(),
            reason: "two\nlines".into(),
        };
        assert_eq!(a.to_string(), "bad 78 two lines");
        for bad in [
            "",
            "ok",
            "ok zz -",
            "ok 61 abcd",
            "done files=x bytes=1",
            "maybe 61 x",
            "ok +1 -",
        ] {
            assert!(Ack::parse(bad).is_err(), "{bad:?}");
        }
    }
}
