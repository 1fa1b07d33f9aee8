//! Reading ARP out of a pcap file (what `tcpdump -w` writes): enough to
//! tell which MACs claimed an IPv4 address, and when.

/// An ARP packet whose sender protocol address was the address asked
/// about: a reply, a gratuitous request or an announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Microseconds since the epoch.
    pub at_us: u64,
    /// 1: request, 2: reply.
    pub op: u16,
    /// The sender hardware address, `aa:bb:...`.
    pub mac: String,
}

/// The Ethernet frames of a classic pcap file, with their time
/// (microseconds since the epoch).
pub fn frames(pcap: &[u8]) -> Vec<(u64, &[u8])> {
    assert!(pcap.len() >= 24, "not a pcap file ({} bytes)", pcap.len());
    let le = match pcap[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] => false,
        _ => panic!("not a classic microsecond pcap: magic {:02x?}", &pcap[..4]),
    };
    let u32_at = |b: &[u8], i: usize| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert_eq!(
        u32_at(pcap, 20),
        1,
        "the capture's link type is not Ethernet"
    );
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= pcap.len() {
        let (sec, usec, len) = (
            u32_at(pcap, i) as u64,
            u32_at(pcap, i + 4) as u64,
            u32_at(pcap, i + 8) as usize,
        );
        out.push((
            sec * 1_000_000 + usec,
            &pcap[i + 16..(i + 16 + len).min(pcap.len())],
        ));
        i += 16 + len;
    }
    out
}

fn mac_text(b: &[u8]) -> String {
    b.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Every ARP packet in `pcap` (classic format, Ethernet) sent from `ip`.
pub fn arp_claims(pcap: &[u8], ip: [u8; 4]) -> Vec<Claim> {
    let mut out = Vec::new();
    for (at_us, frame) in frames(pcap) {
        if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
            continue;
        }
        let arp = &frame[14..];
        if arp[14..18] == ip {
            out.push(Claim {
                at_us,
                op: u16::from_be_bytes([arp[6], arp[7]]),
                mac: mac_text(&arp[8..14]),
            });
        }
    }
    out
}

/// Frames sent from `mac` (`aa:bb:...`, any case).
pub fn frames_from(pcap: &[u8], mac: &str) -> usize {
    let mac = mac.to_lowercase();
    frames(pcap)
        .iter()
        .filter(|(_, f)| f.len() >= 12 && mac_text(&f[6..12]) == mac)
        .count()
}

/// ARP and IPv4 frames that name `ip` anywhere an address goes: ARP's
/// sender or target, IPv4's source or destination.
pub fn frames_naming(pcap: &[u8], ip: [u8; 4]) -> usize {
    frames(pcap)
        .iter()
        .filter(|(_, f)| match f.get(12..14) {
            Some([0x08, 0x06]) if f.len() >= 42 => f[28..32] == ip || f[38..42] == ip,
            Some([0x08, 0x00]) if f.len() >= 34 => f[26..30] == ip || f[30..34] == ip,
            _ => false,
        })
        .count()
}

/// The MACs in the order they took turns claiming the address: one entry
/// per run of claims from the same MAC. `[a, b]` is one handover; `[a, b,
/// a, b]` means both answered at overlapping times.
pub fn turns(claims: &[Claim]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in claims {
        if out.last() != Some(&c.mac) {
            out.push(c.mac.clone());
        }
    }
    out
}

/// A `tcpdump -w` on the lab's production bridge (`br0` in `hc-lan`),
/// running until [`Capture::stop`].
pub struct Capture {
    child: std::process::Child,
    pub path: std::path::PathBuf,
}

impl Capture {
    /// Start capturing (`filter`: a tcpdump expression, e.g. `arp`), and
    /// give tcpdump two seconds to open the interface.
    pub fn production(path: &std::path::Path, filter: Option<&str>) -> Capture {
        let child = std::process::Command::new("ip")
            .args([
                "netns", "exec", "hc-lan", "tcpdump", "-i", "br0", "-U", "-n", "-w",
            ])
            .arg(path)
            .args(filter)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        Capture {
            child,
            path: path.to_path_buf(),
        }
    }

    /// Stop after `grace` (for the last frames) and read the file.
    pub fn stop(mut self, grace: std::time::Duration) -> Vec<u8> {
        std::thread::sleep(grace);
        // SAFETY: the tcpdump this test started (ip netns exec runs it as
        // this pid).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        std::fs::read(&self.path).unwrap()
    }
}
