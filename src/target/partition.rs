//! Writes the planned partition table into a disk image or device, with
//! gptman (GPT plus its protective MBR) or mbrman (MBR with an extended
//! partition for logical ones). Partitions start on 1 MiB boundaries.
//!
//! On failure nothing is half-written in a way that matters: the table is
//! written last, after every extent was computed and checked against the
//! disk size.

use std::io::{Read, Seek, Write};

use crate::plan::{DiskLayout, PartitionRole, PartitionTable};
use crate::units::MIB;

const SECTOR: u64 = 512;
const ALIGN: u64 = MIB;

/// Where a partition lives, in bytes from the start of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub number: u32,
    pub start: u64,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("the partitions need {needed} bytes but the disk has {available}")]
    TooBig { needed: u64, available: u64 },
    #[error("an MBR cannot address beyond 2 TiB (the plan ends at byte {0}); use GPT")]
    MbrTooLarge(u64),
    #[error("writing the GPT: {0}")]
    Gpt(#[from] gptman::Error),
    #[error("writing the MBR: {0}")]
    Mbr(#[from] mbrman::Error),
    #[error("disk I/O while partitioning: {0}")]
    Io(#[from] std::io::Error),
}

/// Byte extents of every partition, in plan order. Logical MBR partitions
/// each get their 1 MiB extended boot record in front; the extended
/// partition spans them all.
pub fn extents(layout: &DiskLayout) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut next = ALIGN;
    let mut extended: Option<usize> = None;
    for p in &layout.partitions {
        if p.role == PartitionRole::Extended {
            extended = Some(out.len());
            out.push(Extent {
                number: p.number,
                start: next,
                size: 0,
            });
            continue;
        }
        if extended.is_some() {
            next += ALIGN; // the EBR
        }
        out.push(Extent {
            number: p.number,
            start: next,
            size: p.size_bytes,
        });
        next += p.size_bytes.div_ceil(ALIGN) * ALIGN;
    }
    if let Some(i) = extended {
        out[i].size = next - out[i].start;
    }
    out
}

/// GPT type GUIDs, as text.
fn type_guid(role: PartitionRole) -> &'static str {
    match role {
        PartitionRole::BiosBoot => "21686148-6449-6E6F-744E-656564454649",
        PartitionRole::Swap => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        _ => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    }
}

/// A GUID in the mixed-endian byte order GPT stores.
pub fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text.bytes().filter(|c| *c != b'-').collect();
    let mut b = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        b[i] = std::str::from_utf8(pair)
            .ok()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// Write the table for `layout` into `disk`. `bootable` marks that MBR
/// partition active (grub-legacy's stage1 does not need it, some BIOSes do).
pub fn write<D: Read + Write + Seek>(
    disk: &mut D,
    layout: &DiskLayout,
    bootable: Option<u32>,
) -> Result<Vec<Extent>, PartitionError> {
    let available = disk.seek(std::io::SeekFrom::End(0))?;
    let ext = extents(layout);
    let end = ext.iter().map(|e| e.start + e.size).max().unwrap_or(0) + ALIGN;
    if end > available {
        return Err(PartitionError::TooBig {
            needed: end,
            available,
        });
    }
    match layout.partition_table {
        PartitionTable::Gpt => write_gpt(disk, layout, &ext)?,
        PartitionTable::Mbr => write_mbr(disk, layout, &ext, bootable)?,
    }
    disk.flush()?;
    Ok(ext)
}

fn write_gpt<D: Read + Write + Seek>(
    disk: &mut D,
    layout: &DiskLayout,
    ext: &[Extent],
) -> Result<(), PartitionError> {
    let mut gpt = gptman::GPT::new_from(disk, SECTOR, crate::random::bytes::<16>()?)?;
    for (p, e) in layout.partitions.iter().zip(ext) {
        let name = match (&p.mount_point, p.role) {
            (Some(mp), _) => mp.clone(),
            (None, PartitionRole::BiosBoot) => "bios-boot".into(),
            (None, PartitionRole::Swap) => "swap".into(),
            (None, _) => String::new(),
        };
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: guid_bytes(type_guid(p.role)),
            unique_partition_guid: crate::random::bytes::<16>()?,
            starting_lba: e.start / SECTOR,
            ending_lba: (e.start + e.size) / SECTOR - 1,
            attribute_bits: 0,
            partition_name: name.as_str().into(),
        };
    }
    gpt.write_into(disk)?;
    gptman::GPT::write_protective_mbr_into(disk, SECTOR)?;
    Ok(())
}

fn write_mbr<D: Read + Write + Seek>(
    disk: &mut D,
    layout: &DiskLayout,
    ext: &[Extent],
    bootable: Option<u32>,
) -> Result<(), PartitionError> {
    let last = ext.iter().map(|e| e.start + e.size).max().unwrap_or(0);
    if last / SECTOR > u64::from(u32::MAX) {
        return Err(PartitionError::MbrTooLarge(last));
    }
    let mut mbr = mbrman::MBR::new_from(disk, SECTOR as u32, crate::random::bytes::<4>()?)?;
    let sectors = |bytes: u64| (bytes / SECTOR) as u32;
    for (p, e) in layout.partitions.iter().zip(ext) {
        let sys = match p.role {
            PartitionRole::Extended => 0x05,
            PartitionRole::Swap => 0x82,
            _ => 0x83,
        };
        if p.number <= 4 {
            mbr[p.number as usize] = mbrman::MBRPartitionEntry {
                boot: if bootable == Some(p.number) {
                    mbrman::BOOT_ACTIVE
                } else {
                    mbrman::BOOT_INACTIVE
                },
                first_chs: mbrman::CHS::empty(),
                sys,
                last_chs: mbrman::CHS::empty(),
                starting_lba: sectors(e.start),
                sectors: sectors(e.size),
            };
        } else {
            // mbrman puts the EBR at the given start and the partition one
            // alignment unit (1 MiB) after it.
            mbr.push(sys, sectors(e.start - ALIGN), sectors(e.size + ALIGN))?;
        }
    }
    mbr.write_into(disk)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::plan::{Partition, PartitionTable};
    use crate::units::GIB;

    fn part(number: u32, role: PartitionRole, size: u64, mp: Option<&str>) -> Partition {
        Partition {
            number,
            role,
            size_bytes: size,
            mount_point: mp.map(str::to_string),
            fs: None,
            inodes: None,
            label: None,
            source_device: None,
            source_used_bytes: None,
        }
    }

    #[test]
    fn bios_boot_guid_has_gpt_byte_order() {
        // "Hah!IdontNeedEFI" is how the BIOS boot GUID reads as bytes.
        assert_eq!(
            &guid_bytes(type_guid(PartitionRole::BiosBoot)),
            b"Hah!IdontNeedEFI"
        );
    }

    #[test]
    fn gpt_written_and_read_back() {
        let layout = DiskLayout {
            partition_table: PartitionTable::Gpt,
            size_bytes: GIB,
            partitions: vec![
                part(1, PartitionRole::BiosBoot, MIB, None),
                part(2, PartitionRole::Filesystem, 700 * MIB, Some("/")),
                part(3, PartitionRole::Swap, 100 * MIB, None),
            ],
        };
        let mut disk = Cursor::new(vec![0u8; GIB as usize]);
        let ext = write(&mut disk, &layout, None).unwrap();
        assert_eq!(
            ext[1],
            Extent {
                number: 2,
                start: 2 * MIB,
                size: 700 * MIB
            }
        );
        let gpt = gptman::GPT::find_from(&mut disk).unwrap();
        assert_eq!(gpt[1].partition_type_guid, *b"Hah!IdontNeedEFI");
        assert_eq!(gpt[2].starting_lba, 2 * MIB / 512);
        assert_eq!(gpt[2].size().unwrap(), 700 * MIB / 512);
        assert_eq!(gpt[2].partition_name.as_str(), "/");
        assert_eq!(
            gpt[3].partition_type_guid,
            guid_bytes(type_guid(PartitionRole::Swap))
        );
        // The protective MBR: type 0xEE at the first entry.
        assert_eq!(disk.get_ref()[446 + 4], 0xEE);
        assert_eq!(&disk.get_ref()[510..512], &[0x55, 0xAA]);
    }

    #[test]
    fn mbr_with_logical_partitions_read_back() {
        let layout = DiskLayout {
            partition_table: PartitionTable::Mbr,
            size_bytes: GIB,
            partitions: vec![
                part(1, PartitionRole::Filesystem, 100 * MIB, Some("/boot")),
                part(2, PartitionRole::Filesystem, 300 * MIB, Some("/")),
                part(3, PartitionRole::Filesystem, 100 * MIB, Some("/home")),
                part(4, PartitionRole::Extended, 0, None),
                part(5, PartitionRole::Filesystem, 100 * MIB, Some("/var")),
                part(6, PartitionRole::Swap, 50 * MIB, None),
            ],
        };
        let mut disk = Cursor::new(vec![0u8; GIB as usize]);
        let ext = write(&mut disk, &layout, Some(1)).unwrap();
        let mbr = mbrman::MBR::read_from(&mut disk, 512).unwrap();
        assert!(mbr[1].is_active() && !mbr[2].is_active());
        assert_eq!(mbr[1].starting_lba, 2048);
        assert!(mbr[4].is_extended());
        assert_eq!(mbr.logical_partitions.len(), 2);
        let var = &mbr.logical_partitions[0].partition;
        assert_eq!(
            (
                u64::from(var.starting_lba) * 512,
                u64::from(var.sectors) * 512
            ),
            (ext[4].start, 100 * MIB)
        );
        assert_eq!(mbr.logical_partitions[1].partition.sys, 0x82);
        assert_eq!(ext[3].start + ext[3].size, ext[5].start + ext[5].size);
    }

    #[test]
    fn a_layout_larger_than_the_disk_is_refused_before_writing() {
        let layout = DiskLayout {
            partition_table: PartitionTable::Gpt,
            size_bytes: GIB,
            partitions: vec![
                part(1, PartitionRole::BiosBoot, MIB, None),
                part(2, PartitionRole::Filesystem, GIB, Some("/")),
            ],
        };
        let mut disk = Cursor::new(vec![0u8; (64 * MIB) as usize]);
        assert!(matches!(
            write(&mut disk, &layout, None),
            Err(PartitionError::TooBig { .. })
        ));
        assert!(
            disk.get_ref().iter().all(|b| *b == 0),
            "nothing may be written"
        );
    }
}
